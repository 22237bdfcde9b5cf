"""The V3 signer reproduces, byte for byte, what Alibaba's official SDKs compute."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from exporter.ecs import signing

VECTORS = Path(__file__).parent / "vectors"


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((VECTORS / name).read_text(encoding="utf-8"))
    return data


CLEAN = {
    k: v for k, v in _load("cross_impl_clean_vectors.json").items() if k.startswith("clean_v3")
}


@pytest.mark.parametrize("name", sorted(CLEAN))
def test_minimal_header_signature_matches_vector(name: str) -> None:
    case = CLEAN[name]
    signed = [h for h in case["headers"] if signing.is_minimal_signed_header(h)]
    canonical, _ = signing.canonical_request(
        case["method"], case["pathname"], case["query"], list(case["headers"].items()), signed
    )
    assert canonical == case["canonical_request"]
    assert signing.string_to_sign(canonical) == case["string_to_sign"]
    assert (
        signing.authorization(
            "testid", "testsecret", case["method"], case["pathname"], case["query"], case["headers"]
        )
        == case["authorization"]
    )


@pytest.mark.parametrize("name", ["sdk_v3_default_endpoint.json", "sdk_v3_sts_token.json"])
def test_all_headers_style_of_the_python_sdk_verifies(name: str) -> None:
    captured = _load(name)["captured"]
    headers = [(k, v) for k, v in captured["headers"] if k != "Authorization"]
    parsed = signing.parse_authorization(dict(captured["headers"])["Authorization"])
    assert parsed is not None
    access_key_id, signed, expected = parsed
    canonical, _ = signing.canonical_request("POST", "/", dict(captured["query"]), headers, signed)
    assert access_key_id == "testid"
    assert signing.signature("testsecret", canonical) == expected


def test_published_canonical_query_unit_vector() -> None:
    case = _load("official_published_vectors.json")["v3_canonical_query_unit_test"]
    assert signing.canonical_query_string(case["input"]) == case["expected"]


def test_space_is_percent_20_never_plus() -> None:
    assert signing.canonical_query_string({"a b": "c d+e"}) == "a%20b=c%20d%2Be"


@pytest.mark.parametrize(
    "value",
    ["", "AAAAAmdcM-00qcYAY-rB0EYKScaCW", "a_b.c~d-e", "a/b", "a=b&c", "é", "\n", "a\u00a0b", "*"],
)
def test_each_character_is_encoded_as_rfc_3986_says(value: str) -> None:
    # Unreserved characters stay as they are (the quick way); every other one is %XX of UTF-8.
    expected = "".join(
        c
        if c.isascii() and (c.isalnum() or c in "-_.~")
        else "".join(f"%{byte:02X}" for byte in c.encode())
        for c in value
    )
    assert signing.percent_encode(value) == expected


@pytest.mark.parametrize(
    "value",
    ["", "Bearer x", "ACS3-HMAC-SHA256 Credential=a", "ACS3-HMAC-SHA256 garbage"],
)
def test_malformed_authorization_is_rejected(value: str) -> None:
    assert signing.parse_authorization(value) is None


def test_a_canonical_query_string_signs_as_its_parameters_do() -> None:
    # The client makes the canonical string once a call (for the URL) and signs with it.
    params = {"RegionId": "cn-hangzhou", "NextToken": "a b/c+d", "MaxResults": "50"}
    headers = {
        "host": "ecs.cn-hangzhou.aliyuncs.com",
        "x-acs-action": "DescribeInvocationResults",
        "x-acs-date": "2026-01-01T00:00:00Z",
    }
    query = signing.canonical_query_string(params)
    assert signing.authorization("id", "secret", "POST", "/", query, headers) == (
        signing.authorization("id", "secret", "POST", "/", params, headers)
    )
