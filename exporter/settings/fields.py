"""The value types of the config: each a type with its rule, and the rule defined once.

Where the runtime checks a value too (endpoints, STS role ARNs, session names, durations), the
type calls the runtime's own rule, so the config refuses exactly what would fail at start-up.
Messages name the problem, and repeat the value only where it cannot be a secret.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Final
from urllib.parse import urlsplit

from pydantic import AfterValidator, AllowInfNan, BeforeValidator

from exporter.ecs.credentials import (
    duration_problem,
    role_arn_problem,
    session_name_problem,
)
from exporter.ecs.request import parse_endpoint, region_id_problem

DEFAULT_SESSION_NAME: Final = "aliyun-cloudassistant-exporter"

_TARGET_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,63}$")
_OIDC_PROVIDER_ARN: Final = re.compile(r"^acs:ram::\d+:oidc-provider/\S+$")


def _endpoint_rule(default_scheme: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        # Checked first: the runtime's message would repeat the URL, password included.
        text = value if "://" in value else f"{default_scheme}://{value}"
        try:
            parts = urlsplit(text)
            has_credentials = parts.username is not None or parts.password is not None
            has_query = bool(parts.query or parts.fragment)
        except ValueError:
            has_credentials = "@" in text
            has_query = "?" in text or "#" in text
        if has_credentials:
            raise ValueError("the URL must not contain credentials")
        if has_query:  # not repeated either: a query can carry a token (?token=...)
            raise ValueError(
                "the URL must not have a query or fragment (requests are signed for /)"
            )
        try:
            parse_endpoint(value, default_scheme=default_scheme)
        except ValueError as exc:
            raise ValueError(str(exc).removeprefix("endpoint ")) from None
        return value

    return check


def _check_target_name(value: str) -> str:
    if not _TARGET_NAME.match(value):
        raise ValueError(
            f"{value!r} is not a valid name (1-64 letters, digits or _ . @ : -, "
            "starting with a letter or digit)"
        )
    return value


def _rule(problem: Callable[[str], str | None]) -> Callable[[str], str]:
    def check(value: str) -> str:
        found = problem(value)
        if found is not None:
            raise ValueError(found)
        return value

    return check


def _check_duration(value: int) -> int:
    found = duration_problem(value)
    if found is not None:
        raise ValueError(found)
    return value


def _oidc_provider_arn_problem(value: str) -> str | None:
    if not _OIDC_PROVIDER_ARN.match(value):
        return f"{value!r} is not an OIDC provider ARN (acs:ram::<uid>:oidc-provider/<name>)"
    return None


def _not_a_boolean(message: str) -> Callable[[object], object]:
    def check(value: object) -> object:
        # pydantic reads true as 1 and false as 0: `page_cap: true` would be a cap of one page.
        if isinstance(value, bool):
            raise ValueError(message)
        return value

    return check


WholeNumber = Annotated[
    int, BeforeValidator(_not_a_boolean("must be a whole number, not true or false"))
]
"""An integer field: ``true``/``false`` is refused (YAML's, or a string of an environment
variable, is read by pydantic's own rules)."""
Number = Annotated[
    float,
    BeforeValidator(_not_a_boolean("must be a number, not true or false")),
    AllowInfNan(False),
]
"""A float field: finite (``.nan`` and ``.inf`` are refused) and not ``true``/``false``."""
ApiEndpoint = Annotated[str, AfterValidator(_endpoint_rule("https"))]
"""The ECS API or STS: a URL or a bare host (``https://`` assumed), no path."""
MetadataUrl = Annotated[str, AfterValidator(_endpoint_rule("http"))]
"""The instance metadata service: a URL or a bare host (``http://`` assumed), no path."""
RegionId = Annotated[str, AfterValidator(_rule(region_id_problem))]
TargetName = Annotated[str, AfterValidator(_check_target_name)]
RoleArn = Annotated[str, AfterValidator(_rule(role_arn_problem))]
OidcProviderArn = Annotated[str, AfterValidator(_rule(_oidc_provider_arn_problem))]
SessionName = Annotated[str, AfterValidator(_rule(session_name_problem))]
DurationSeconds = Annotated[WholeNumber, AfterValidator(_check_duration)]
