"""Alibaba Cloud API signature V3 (ACS3-HMAC-SHA256).

The contract, as the official SDKs implement it (pinned by ``tests/vectors``):

* canonical query: every parameter percent-encoded as RFC 3986 (only ``A-Z a-z 0-9 - _ . ~`` bare,
  space as ``%20``), sorted by encoded name, joined as ``name=value`` with ``&``; an empty value
  keeps its ``=``;
* canonical headers: the signed header names lower-cased and sorted, each ``name:value`` with the
  value stripped, duplicate names joined with ``,`` (values sorted);
* string to sign: ``ACS3-HMAC-SHA256\\n`` + hex SHA-256 of the canonical request;
* ``Authorization: ACS3-HMAC-SHA256 Credential=<id>,SignedHeaders=<names>,Signature=<hex>``.

The query string put on the wire must be exactly :func:`canonical_query_string` (httpx's own
``params=`` encodes a space as ``+``, which would break the signature).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote

ALGORITHM = "ACS3-HMAC-SHA256"
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()


# What percent_encode() keeps as it is: the RFC 3986 unreserved characters.
_UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*")


def percent_encode(value: str) -> str:
    """Encode ``value`` as RFC 3986 requires (UTF-8, unreserved characters kept)."""
    if _UNRESERVED.fullmatch(value):  # the usual case (names, region, NextToken): as it is
        return value
    return quote(value, safe="-_.~")


def canonical_query_string(query: Mapping[str, str]) -> str:
    """Return the sorted, percent-encoded query string that is both signed and sent."""
    encoded = sorted((percent_encode(k), percent_encode(v)) for k, v in query.items())
    return "&".join(f"{k}={v}" for k, v in encoded)


def is_minimal_signed_header(name: str) -> bool:
    """Tell whether ``name`` is in the minimal signed set: host, content-type, x-acs-*."""
    lower = name.lower()
    return lower in ("host", "content-type") or lower.startswith("x-acs-")


def canonical_headers(headers: Iterable[tuple[str, str]], signed: Iterable[str]) -> tuple[str, str]:
    """Return ``(canonical_headers, signed_headers)`` for the header names in ``signed``."""
    wanted = {name.lower() for name in signed}
    values: dict[str, list[str]] = {}
    for name, value in headers:
        lower = name.lower()
        if lower in wanted:
            values.setdefault(lower, []).append(value.strip())
    names = sorted(values)
    lines = "".join(f"{n}:{','.join(sorted(values[n]))}\n" for n in names)
    return lines, ";".join(names)


def canonical_request(
    method: str,
    pathname: str,
    query: Mapping[str, str] | str,
    headers: Iterable[tuple[str, str]],
    signed: Iterable[str],
    payload_sha256: str = EMPTY_BODY_SHA256,
) -> tuple[str, str]:
    """Return ``(canonical_request, signed_headers)`` as the V3 algorithm defines them.

    ``query`` is the parameters, or their :func:`canonical_query_string` already made (the
    client makes it once a call, for the URL too).
    """
    header_lines, signed_names = canonical_headers(headers, signed)
    text = "\n".join(
        (
            method.upper(),
            pathname or "/",
            query if isinstance(query, str) else canonical_query_string(query),
            header_lines,
            signed_names,
            payload_sha256,
        )
    )
    return text, signed_names


def string_to_sign(canonical: str) -> str:
    """Return the string that is HMAC-ed: the algorithm and the hashed canonical request."""
    return f"{ALGORITHM}\n{hashlib.sha256(canonical.encode()).hexdigest()}"


def signature(secret: str, canonical: str) -> str:
    """Return the hex HMAC-SHA256 signature of ``canonical`` with ``secret``."""
    return hmac.digest(secret.encode(), string_to_sign(canonical).encode(), "sha256").hex()


def authorization(
    access_key_id: str,
    access_key_secret: str,
    method: str,
    pathname: str,
    query: Mapping[str, str] | str,
    headers: Mapping[str, str],
    payload_sha256: str = EMPTY_BODY_SHA256,
) -> str:
    """Return the ``Authorization`` value, signing host, content-type and x-acs-* headers
    (``query``: as :func:`canonical_request` takes it)."""
    items = list(headers.items())
    signed = [name for name, _ in items if is_minimal_signed_header(name)]
    canonical, signed_names = canonical_request(
        method, pathname, query, items, signed, payload_sha256
    )
    sig = signature(access_key_secret, canonical)
    return f"{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_names},Signature={sig}"


def parse_authorization(value: str) -> tuple[str, list[str], str] | None:
    """Split an ``Authorization`` value into ``(access_key_id, signed_headers, signature)``.

    Returns ``None`` when the value is not a well-formed ACS3-HMAC-SHA256 authorization.
    """
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        return None
    parts: dict[str, str] = {}
    for piece in rest.split(","):
        key, sep, val = piece.strip().partition("=")
        if not sep:
            return None
        parts[key] = val
    try:
        return parts["Credential"], parts["SignedHeaders"].split(";"), parts["Signature"]
    except KeyError:
        return None
