"""What every request to an Alibaba Cloud API shares: where it goes, its date, who sends it.

Both the ECS client and the credential providers (STS ``AssumeRole``) build signed V3 requests,
so these helpers sit below both of them; this module imports only :mod:`exporter.ecs.signing`
(and :func:`exporter.validation.shown_value`).
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

from exporter import __version__
from exporter.ecs import signing
from exporter.validation import shown_value

USER_AGENT = f"aliyun-cloudassistant-exporter/{__version__}"
# The date format of ``x-acs-date`` (V3) and of the RPC-style ``Timestamp`` parameter: UTC, to
# the second.
ACS_DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def acs_date(epoch_seconds: float | None = None) -> str:
    """Return ``epoch_seconds`` (default: now) in :data:`ACS_DATE_FORMAT`."""
    return _acs_date_of_second(int(time.time() if epoch_seconds is None else epoch_seconds))


@functools.lru_cache(maxsize=4)  # every request signs the current second: formatted once
def _acs_date_of_second(second: int) -> str:
    return time.strftime(ACS_DATE_FORMAT, time.gmtime(second))


def parse_endpoint(url: str, *, default_scheme: str = "https") -> tuple[str, str]:
    """Return ``(base_url, host_header)`` for an endpoint given as a URL or a bare host.

    This is the one endpoint rule; the config validates with it too. Without a scheme,
    ``default_scheme`` is assumed (``https`` for the API and STS); ``http://`` is allowed
    (proxies, the simulator). A path, query or fragment is refused: requests are signed for
    ``/``. The host header is the URL's ``host[:port]``, which is also what gets signed.
    """
    text = url.strip()
    if "://" not in text:
        text = f"{default_scheme}://{text}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"endpoint {shown_value(url)}: the scheme must be http or https")
    if not parts.hostname or parts.username is not None or parts.password is not None:
        raise ValueError(f"endpoint {shown_value(url)}: needs a host and no user information")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"endpoint {shown_value(url)}: must not have a path, query or fragment")
    try:
        port = parts.port
    except ValueError:
        problem = "the port is not a number in 0-65535"
        raise ValueError(f"endpoint {shown_value(url)}: {problem}") from None
    host = parts.netloc.lower()
    if port is None and host.endswith(":"):
        host = host[:-1]
    return f"{parts.scheme}://{host}/", host


# cn-hangzhou, ap-southeast-1, cn-shanghai-finance-1, us-east-1 ... (a part of a host name).
_REGION_ID = re.compile(r"^[a-z]{2,}(?:-[a-z0-9]+){1,4}$")


def region_id_problem(region_id: str) -> str | None:
    """What is wrong with a region id, or ``None``: the one rule, the config checks it too."""
    if not _REGION_ID.match(region_id):
        return f"{region_id!r} is not a region id (expected something like cn-hangzhou)"
    return None


def default_endpoint(region_id: str, *, use_vpc_endpoint: bool = False) -> str:
    """Return the public (or VPC) ECS endpoint URL of a region."""
    prefix = "ecs-vpc" if use_vpc_endpoint else "ecs"
    return f"https://{prefix}.{region_id}.aliyuncs.com"


def signed_request_headers(
    *,
    host: str,
    action: str,
    version: str,
    query: Mapping[str, str] | str,
    access_key_id: str,
    access_key_secret: str,
    security_token: str | None = None,
    user_agent: str = USER_AGENT,
) -> dict[str, str]:
    """Return the headers of one V3 ``POST /`` with an empty body, ``Authorization`` included.

    The date (UTC, second precision) and the nonce are new on every call, so every try is
    signed afresh. ``query`` is the parameters or their canonical query string (see
    :func:`exporter.ecs.signing.canonical_request`).
    """
    headers = {
        "host": host,
        "x-acs-action": action,
        "x-acs-version": version,
        "x-acs-date": acs_date(),
        "x-acs-signature-nonce": secrets.token_hex(16),
        "x-acs-content-sha256": signing.EMPTY_BODY_SHA256,
    }
    if security_token is not None:
        headers["x-acs-security-token"] = security_token
    headers["Authorization"] = signing.authorization(
        access_key_id, access_key_secret, "POST", "/", query, headers
    )
    headers["user-agent"] = user_agent
    headers["accept"] = "application/json"
    return headers
