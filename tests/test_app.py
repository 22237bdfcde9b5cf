"""Wiring choices of ``build_application`` that no request on loopback can show."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from exporter.app import build_application
from exporter.settings import load_config_file


def test_instance_metadata_never_goes_through_the_environments_proxy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests may not send packets to 100.100.100.200, so this asks httpx which transport it
    # would use: the proxy for STS, a direct one for the link-local metadata service.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    config = tmp_path / "config.yml"
    config.write_text(
        "targets: [{name: a, region_id: cn-hangzhou, credentials: {source: ecs_ram_role}}]\n",
        encoding="utf-8",
    )
    app = build_application(load_config_file(config))
    try:
        credentials_http = app.http_clients[1]
        metadata = credentials_http._transport_for_url(httpx.URL("http://100.100.100.200/latest"))
        sts = credentials_http._transport_for_url(httpx.URL("https://sts.aliyuncs.com/"))
        assert isinstance(metadata, httpx.HTTPTransport)
        assert metadata is not sts
        assert sts._pool._proxy_url is not None  # type: ignore[attr-defined]
        assert getattr(metadata._pool, "_proxy_url", None) is None
    finally:
        app.close()


def test_targets_of_one_account_and_region_share_one_token_bucket(tmp_path: Path) -> None:
    # The API's quota is per account and region: two targets of the same account with other
    # filters must not each get the full rate.
    config = tmp_path / "config.yml"
    config.write_text(
        """
targets:
  - name: prod-sre
    region_ids: [cn-hangzhou, cn-beijing]
    credentials: {source: static, access_key_id: LTAI5tSame, access_key_secret: s3cret-one}
    filters: {tags: {team: sre}}
  - name: prod-db
    region_id: cn-hangzhou
    credentials: {source: static, access_key_id: LTAI5tSame, access_key_secret: s3cret-one}
    filters: {tags: {team: db}}
  - name: other
    region_id: cn-hangzhou
    credentials: {source: static, access_key_id: LTAI5tOther, access_key_secret: s3cret-two}
""",
        encoding="utf-8",
    )
    app = build_application(load_config_file(config))
    try:
        buckets = {
            (r.name, r.region_id): r.client.client._rate_limiter  # type: ignore[attr-defined]
            for r in app.refreshers
        }
    finally:
        app.close()
    assert buckets[("prod-sre", "cn-hangzhou")] is buckets[("prod-db", "cn-hangzhou")]
    assert buckets[("prod-sre", "cn-beijing")] is not buckets[("prod-sre", "cn-hangzhou")]
    assert buckets[("other", "cn-hangzhou")] is not buckets[("prod-db", "cn-hangzhou")]
