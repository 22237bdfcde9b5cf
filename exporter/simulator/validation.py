"""What the simulated API checks in a request: the V3 signature and the parameters.

Each check raises :class:`~exporter.simulator.errors.ApiError` with the code and status the API
answers. :func:`verify_v3_signature` is shared by every fake service that checks signatures (the
ECS API, and the tests' STS).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from urllib.parse import unquote

from exporter.ecs import signing
from exporter.ecs.models import INVOKE_RECORD_STATUSES
from exporter.simulator.errors import ApiError
from exporter.simulator.model import RecordFilter

_TAG_PARAM = re.compile(r"^Tag\.(\d+)\.(Key|Value)$")


def verify_v3_signature(
    method: str,
    path: str,
    params: Mapping[str, str],
    headers: list[tuple[str, str]],
    body: bytes,
    auth: tuple[str, list[str], str],
    secret: str | None,
) -> None:
    """Verify an ACS3-HMAC-SHA256 request as the service does, or raise :class:`ApiError`.

    ``auth`` is the parsed ``Authorization``; ``secret`` the AccessKey secret of its key id
    (``None``: unknown key). ``host`` and every ``x-acs-*`` header sent must be signed, and the
    signature is recomputed over the headers the client listed, so both the minimal header set
    and the official SDK's all-headers style verify. Shared by every fake service that checks
    signatures (the ECS API here, STS in ``metadata``).
    """
    _, signed_headers, provided = auth
    lower = {name.lower(): value for name, value in headers}
    _check_signed_headers(headers, lower, signed_headers)
    if secret is None:
        raise ApiError(404, "InvalidAccessKeyId.NotFound", "Specified access key is not found.")
    payload = hashlib.sha256(body).hexdigest()
    canonical, _ = signing.canonical_request(method, path, params, headers, signed_headers, payload)
    if not hmac.compare_digest(signing.signature(secret, canonical), provided):
        raise ApiError(
            400,
            "SignatureDoesNotMatch",
            "Specified signature does not match our calculation. server string to sign "
            f"is:{signing.string_to_sign(canonical)}",
        )


def _check_signed_headers(
    headers: list[tuple[str, str]], lower: Mapping[str, str], signed_headers: list[str]
) -> None:
    """Required headers present; ``host`` and every ``x-acs-*`` sent are signed; every signed
    header was sent."""
    signed = {name.lower() for name in signed_headers}
    for required in ("host", "x-acs-date", "x-acs-signature-nonce", "x-acs-content-sha256"):
        if required not in lower:
            raise ApiError(
                400,
                "IncompleteSignature",
                f"The request signature does not conform to Aliyun standards: the "
                f"{required} header is missing.",
            )
    names = {name.lower() for name, _ in headers}
    unsigned = sorted(
        n for n in names if (n == "host" or n.startswith("x-acs-")) and n not in signed
    )
    if unsigned:
        raise ApiError(
            400,
            "IncompleteSignature",
            "The request signature does not conform to Aliyun standards: headers not "
            f"signed: {', '.join(unsigned)}.",
        )
    missing = sorted(signed - names)
    if missing:
        raise ApiError(
            400,
            "IncompleteSignature",
            "The request signature does not conform to Aliyun standards: signed headers "
            f"not sent: {', '.join(missing)}.",
        )


def parse_query(query: str) -> dict[str, str]:
    """Decode a query string exactly (``+`` stays ``+``: V3 clients encode a space as %20)."""
    params: dict[str, str] = {}
    if not query:
        return params
    for piece in query.split("&"):
        if not piece:
            continue
        key, _, value = piece.partition("=")
        params[unquote(key)] = unquote(value)
    return params


def int_param(
    params: Mapping[str, str],
    name: str,
    default: int,
    code: str,
    low: int,
    high: int | None,
) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        raise ApiError(400, code, f"The specified parameter {name} is not valid.")
    return value


def parse_filter(params: Mapping[str, str]) -> RecordFilter:
    """Validate the filter parameters (raises :class:`ApiError` as the API does)."""
    status = params.get("InvokeRecordStatus") or None
    if status is not None and status not in INVOKE_RECORD_STATUSES:
        raise ApiError(
            400,
            "InvalidParameter.InvokeRecordStatus",
            "The specified parameter InvokeRecordStatus is not valid.",
        )
    history_raw = params.get("IncludeHistory", "").lower()
    if history_raw not in ("", "true", "false"):
        raise ApiError(
            400, "InvalidParameter", "The specified parameter IncludeHistory is not valid."
        )
    include_history = history_raw == "true"
    invoke_id = params.get("InvokeId") or None
    if include_history and invoke_id is None:
        raise ApiError(
            400, "InvalidParameter", "IncludeHistory=true requires the InvokeId parameter."
        )
    return RecordFilter(
        resource_group_id=params.get("ResourceGroupId") or None,
        invoke_id=invoke_id,
        instance_id=params.get("InstanceId") or None,
        command_id=params.get("CommandId") or None,
        invoke_record_status=status,
        include_history=include_history,
        tags=parse_tags(params),
    )


def parse_tags(params: Mapping[str, str]) -> tuple[tuple[str, str | None], ...]:
    keys: dict[int, str] = {}
    values: dict[int, str] = {}
    for name, value in params.items():
        match = _TAG_PARAM.match(name)
        if match is None:
            if name.startswith("Tag."):
                raise ApiError(400, "InvalidParameter", f"The parameter {name} is not valid.")
            continue
        n = int(match.group(1))
        if not 1 <= n <= 20:
            raise ApiError(400, "NumberExceed.Tags", "The Tags parameter number is exceed.")
        (keys if match.group(2) == "Key" else values)[n] = value
    if len(set(keys) | set(values)) > 20:
        raise ApiError(400, "NumberExceed.Tags", "The Tags parameter number is exceed.")
    tags: list[tuple[str, str | None]] = []
    for n in sorted(set(keys) | set(values)):
        key = keys.get(n, "")
        if not key:
            raise ApiError(400, "MissingParameter.TagKey", "You must specify Tag.N.Key.")
        if (
            len(key) > 64
            or key.startswith(("aliyun", "acs:"))
            or "http://" in key
            or "https://" in key
        ):
            raise ApiError(400, "InvalidTagKey.Malformed", "The specified Tag.n.Key is not valid.")
        tag_value = values.get(n)
        if tag_value is not None and (
            len(tag_value) > 128 or "http://" in tag_value or "https://" in tag_value
        ):
            raise ApiError(
                400, "InvalidTagValue.Malformed", "The specified Tag.n.Value is not valid."
            )
        if any(key == seen for seen, _ in tags):
            raise ApiError(400, "Duplicate.TagKey", "The Tag.N.Key contain duplicate key.")
        tags.append((key, tag_value))
    return tuple(tags)
