"""The one-account configuration, from environment variables (no config file).

``ALIYUN_CLOUDASSISTANT_REGIONS`` (comma-separated, required), ``ALIYUN_CLOUDASSISTANT_ACCOUNT``
(default ``default``), ``ALIYUN_CLOUDASSISTANT_ENDPOINT`` or ``..._USE_VPC_ENDPOINT``, the
config file's ``refresh`` and ``api`` keys as ``..._REFRESH__<KEY>`` / ``..._API__<KEY>``, and
``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``_SECRET`` / ``ALIBABA_CLOUD_SECURITY_TOKEN`` (without them,
the default credentials chain). ``ALIYUN_CLOUDASSISTANT_SECRETS_DIR`` names a directory of files
named like these variables (Docker and Kubernetes secrets), read with the secret-file cap and
rules; a variable that is set wins over its file.

The environment is passed in (``os.environ`` by default) and read here, explicitly: every error
names the variable a user sets, and no value of a secret variable is ever shown.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Final, Self

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from exporter.ecs.credentials import ENV_ACCESS_KEY_ID, ENV_ACCESS_KEY_SECRET, ENV_SECURITY_TOKEN
from exporter.files import (
    MAX_SECRET_FILE_BYTES,
    read_secret_file,
    read_text_file,
)
from exporter.settings.fields import ApiEndpoint, RegionId, TargetName
from exporter.settings.models import (
    ApiSettings,
    ExporterSettings,
    RefreshSettings,
    StaticCredentialsSettings,
    check_secret,
    endpoint_choice_problem,
)
from exporter.settings.problems import ConfigError, ConfigProblem
from exporter.settings.translate import problems_from
from exporter.validation import MAX_SHOWN_PATH_CHARS, did_you_mean, shown_value

ENV_PREFIX: Final = "ALIYUN_CLOUDASSISTANT_"
SECRETS_DIR_VARIABLE: Final = f"{ENV_PREFIX}SECRETS_DIR"
SOURCE: Final = "environment"
# A Kubernetes Service named aliyun-cloudassistant-exporter injects service-link variables
# (ALIYUN_CLOUDASSISTANT_EXPORTER_SERVICE_HOST, ...) that share the prefix: not typos.
_SERVICE_LINK_PREFIX: Final = f"{ENV_PREFIX}EXPORTER_"
_SECTIONS: Final[dict[str, type[BaseModel]]] = {"refresh": RefreshSettings, "api": ApiSettings}
# The field of EnvironmentSettings -> the variable it is read from.
_VARIABLES: Final[dict[str, str]] = {
    "regions": f"{ENV_PREFIX}REGIONS",
    "account": f"{ENV_PREFIX}ACCOUNT",
    "endpoint": f"{ENV_PREFIX}ENDPOINT",
    "use_vpc_endpoint": f"{ENV_PREFIX}USE_VPC_ENDPOINT",
    "access_key_id": ENV_ACCESS_KEY_ID,
    "access_key_secret": ENV_ACCESS_KEY_SECRET,
    "security_token": ENV_SECURITY_TOKEN,
    "refresh": f"{ENV_PREFIX}REFRESH",
    "api": f"{ENV_PREFIX}API",
}
SECRET_VARIABLES: Final = (ENV_ACCESS_KEY_SECRET, ENV_SECURITY_TOKEN)
# A field of the target built from the variables -> the variable it comes from.
_TARGET_VARIABLES: Final[dict[str, str]] = {
    "name": _VARIABLES["account"],
    "endpoint": _VARIABLES["endpoint"],
    "use_vpc_endpoint": _VARIABLES["use_vpc_endpoint"],
    "credentials.access_key_id": ENV_ACCESS_KEY_ID,
    "credentials.access_key_secret": ENV_ACCESS_KEY_SECRET,
    "credentials.security_token": ENV_SECURITY_TOKEN,
}


def nested_variables() -> dict[str, str]:
    """``ALIYUN_CLOUDASSISTANT_REFRESH__MIN_INTERVAL_SECONDS`` ... -> the config key it sets."""
    return {
        f"{ENV_PREFIX}{section.upper()}__{name.upper()}": f"{section}.{name}"
        for section, model in _SECTIONS.items()
        for name in model.model_fields
    }


def known_variables() -> list[str]:
    """Every variable this module reads, sorted."""
    return sorted({*_VARIABLES.values(), SECRETS_DIR_VARIABLE, *nested_variables()})


class EnvironmentSettings(BaseModel):
    """The variables, validated (field names as in the config file)."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    regions: Annotated[list[RegionId], Field(min_length=1)]
    account: TargetName = "default"
    endpoint: ApiEndpoint | None = None
    use_vpc_endpoint: bool = False
    access_key_id: str | None = None  # empty: not set (the default chain), as before
    access_key_secret: SecretStr | None = None
    security_token: SecretStr | None = None
    refresh: RefreshSettings = Field(default_factory=RefreshSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)

    @model_validator(mode="after")
    def _check_combinations(self) -> Self:
        problem = endpoint_choice_problem(
            self.endpoint,
            self.use_vpc_endpoint,
            (_VARIABLES["endpoint"], _VARIABLES["use_vpc_endpoint"]),
        )
        if problem is not None:
            raise ValueError(problem)
        if self.access_key_id and self.access_key_secret is None:
            raise ValueError(f"{ENV_ACCESS_KEY_SECRET} is required when {ENV_ACCESS_KEY_ID} is set")
        # A secret or token without its key id is half a configuration: say so now rather
        # than fail every refresh with "no credentials".
        for name, value in (
            (ENV_ACCESS_KEY_SECRET, self.access_key_secret),
            (ENV_SECURITY_TOKEN, self.security_token),
        ):
            if value is not None and not self.access_key_id:
                raise ValueError(f"{ENV_ACCESS_KEY_ID} is required when {name} is set")
            check_secret(name, value)
        return self

    def to_exporter_settings(self) -> ExporterSettings:
        """The equivalent config file (validated the same way)."""
        credentials: dict[str, object] = {"source": "default"}
        if self.access_key_id:
            credentials = {
                "source": "static",
                "access_key_id": self.access_key_id,
                "access_key_secret": self.access_key_secret,
                "security_token": self.security_token,
            }
        target: dict[str, object] = {
            "name": self.account,
            "region_ids": self.regions,
            "credentials": credentials,
            "use_vpc_endpoint": self.use_vpc_endpoint,
        }
        if self.endpoint:
            target["endpoint"] = self.endpoint
        settings = ExporterSettings.model_validate(
            {"targets": [target], "refresh": self.refresh, "api": self.api}
        )
        for configured in settings.targets:
            if isinstance(configured.credentials, StaticCredentialsSettings):
                configured.credentials.mark_from_environment()
        return settings


def load_environment(environ: Mapping[str, str] | None = None) -> ExporterSettings:
    """The one-account configuration from ``environ`` (``os.environ`` by default).

    Raises :class:`ConfigError` naming the variables that are wrong.
    """
    environ = os.environ if environ is None else environ
    unknown = unknown_variables(environ)
    if unknown:
        raise ConfigError(SOURCE, unknown)
    values = _with_secret_files(environ)
    secrets = [values[name] for name in SECRET_VARIABLES if values.get(name)]
    data, problems = _structure(values)
    if problems:
        raise ConfigError(SOURCE, problems)
    try:
        return EnvironmentSettings.model_validate(data).to_exporter_settings()
    except ValidationError as exc:
        found = [
            ConfigProblem(path=_variable_of(problem.path), message=problem.message)
            for problem in problems_from(exc, secrets)
        ]
        raise ConfigError(SOURCE, found) from None
    except RecursionError:
        raise ConfigError.single(SOURCE, "a JSON section is nested too deeply") from None


def unknown_variables(environ: Mapping[str, str]) -> list[ConfigProblem]:
    """A problem for each ``ALIYUN_CLOUDASSISTANT_*`` variable the exporter does not read.

    A misspelled variable would otherwise be ignored silently (``..._ENDPIONT``: the real API
    instead of the intended endpoint).
    """
    known = known_variables()
    problems = []
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in known:
            continue
        if name.startswith(_SERVICE_LINK_PREFIX):
            continue
        close = did_you_mean(name, known, cutoff=0.8)
        hint = f", did you mean {close}?" if close else f" (known: {', '.join(known)})"
        problems.append(ConfigProblem(path=name, message=f"unknown variable{hint}"))
    return problems


def _with_secret_files(environ: Mapping[str, str]) -> dict[str, str]:
    """The variables this module reads: from ``environ``, else from the secrets directory."""
    names = [name for name in known_variables() if name != SECRETS_DIR_VARIABLE]
    values = {name: environ[name] for name in names if name in environ}
    directory = environ.get(SECRETS_DIR_VARIABLE) or None
    if directory is None:
        return values
    if not Path(directory).is_dir():
        raise ConfigError.single(
            SOURCE,
            f"{shown_value(directory, MAX_SHOWN_PATH_CHARS)} is not a directory",
            path=SECRETS_DIR_VARIABLE,
        )
    problems = []
    for name in names:
        path = Path(directory) / name
        if name in values or not os.path.lexists(path):
            continue
        try:
            if name in SECRET_VARIABLES:
                values[name] = read_secret_file(path)
            else:  # a setting (a JSON section may span lines): the same reader and cap
                values[name] = read_text_file(path, max_bytes=MAX_SECRET_FILE_BYTES).strip()
        except ValueError as exc:
            problems.append(
                ConfigProblem(path=SECRETS_DIR_VARIABLE, message=f"the file {name} {exc}")
            )
    if problems:
        raise ConfigError(SOURCE, problems)
    return values


def _structure(values: Mapping[str, str]) -> tuple[dict[str, object], list[ConfigProblem]]:
    """The variables as the model's input: regions split, sections assembled from JSON and
    ``__`` variables (these win)."""
    data: dict[str, object] = {}
    problems: list[ConfigProblem] = []
    for field, variable in _VARIABLES.items():
        if variable not in values or field in _SECTIONS:
            continue
        value: object = values[variable]
        if field == "regions":
            value = [region.strip() for region in values[variable].split(",") if region.strip()]
        data[field] = value
    for section in _SECTIONS:
        variable = _VARIABLES[section]
        merged: dict[str, object] = {}
        if variable in values:
            try:
                parsed = json.loads(values[variable])
            except (ValueError, RecursionError):
                parsed = None
            if not isinstance(parsed, dict):
                problems.append(
                    ConfigProblem(
                        path=variable,
                        message="not valid JSON of the section's keys (or set single keys "
                        f"instead, e.g. {ENV_PREFIX}REFRESH__MIN_INTERVAL_SECONDS=60)",
                    )
                )
                continue
            merged.update(parsed)
        prefix = f"{variable}__"
        for name, key in nested_variables().items():
            if name.startswith(prefix) and name in values:
                merged[key.partition(".")[2]] = values[name]
        if merged:
            data[section] = merged
    return data, problems


def _variable_of(path: str) -> str:
    """The variable behind a problem's path (``refresh.page_cap`` ->
    ``ALIYUN_CLOUDASSISTANT_REFRESH__PAGE_CAP``, ``regions[1]`` -> ``..._REGIONS[1]``)."""
    if not path:
        return path
    if path.startswith("targets[0]."):  # the one target built from the variables
        return _TARGET_VARIABLES.get(path.removeprefix("targets[0]."), "")
    head, bracket, rest = path.partition("[")
    section, dot, key = head.partition(".")
    variable = _VARIABLES.get(section)
    if variable is None:  # a rule of the whole configuration: the message names the variables
        return ""
    if dot:
        variable = f"{variable}__{key.upper().replace('.', '__')}"
    return f"{variable}{bracket}{rest}"


_VARIABLE_HELP: Final[dict[str, str]] = {
    _VARIABLES["regions"]: "comma-separated region ids (required)",
    _VARIABLES["account"]: "the account label (default: default)",
    _VARIABLES["endpoint"]: "the API endpoint, a URL or a host (https:// assumed), no path",
    _VARIABLES["use_vpc_endpoint"]: "true: the VPC endpoint ecs-vpc.<region>.aliyuncs.com",
    SECRETS_DIR_VARIABLE: "a directory of files named like these variables (secrets)",
    ENV_ACCESS_KEY_ID: "an AccessKey id; without one, the default credentials chain",
    ENV_ACCESS_KEY_SECRET: "its secret",
    ENV_SECURITY_TOKEN: "an STS token, with a temporary AccessKey",
}


def variables_help() -> str:
    """The ``--help`` text on the environment: every variable :func:`known_variables` lists."""
    width = max(len(name) for name in _VARIABLE_HELP) + 2
    lines = ["Without --config.file, one account is read from the environment:"]
    lines += [f"  {name:<{width}}{text}" for name, text in _VARIABLE_HELP.items()]
    for section, model in _SECTIONS.items():
        variable = f"{_VARIABLES[section]}__<KEY>"
        lines.append(f"  {variable:<{width}}the config file's {section}.<key>, KEY one of:")
        keys = ", ".join(name.upper() for name in model.model_fields)
        indent = " " * (width + 2)
        lines += textwrap.wrap(keys, 100, initial_indent=indent, subsequent_indent=indent)
    return "\n".join(lines)
