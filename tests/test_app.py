"""Wiring choices of ``build_application`` that no request on loopback can show."""

from __future__ import annotations

import gc
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from freezegun import freeze_time
from prometheus_client import CollectorRegistry

from exporter.app import Application, build_application
from exporter.settings import ExporterSettings, load_config_file


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


class _FirstRefresh:
    """A refresher as settle_memory sees it: whether its first refresh was attempted."""

    def __init__(self) -> None:
        self.attempted = False

    def latest(self) -> _FirstRefresh:
        return self


def test_free_memory_goes_back_to_the_system_during_the_first_walks_and_then_less_often(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    released: list[float] = []
    refresher = _FirstRefresh()
    app = Application(
        settings=ExporterSettings.model_construct(),  # settle_memory reads none of it
        targets=[],
        refreshers=[refresher],  # type: ignore[list-item]
        registry=CollectorRegistry(),
        executor=ThreadPoolExecutor(max_workers=1),
        http_clients=[],
    )
    with freeze_time("2026-12-06 06:00:00") as frozen:
        monkeypatch.setattr("exporter.app.release_free_memory", lambda: released.append(1.0))
        monkeypatch.setattr(gc, "freeze", lambda: None)  # not this test process's objects
        for _ in range(10):  # the serving loop calls it every 0.2 s while the walks run
            app.settle_memory()
            frozen.tick(0.2)
        assert len(released) == 2  # at most once a second, not at every call
        refresher.attempted = True
        app.settle_memory()  # every first walk done: settled, released at once
        assert len(released) == 3
        for _ in range(50):  # then every RELEASE_MEMORY_SECONDS (15 s)
            frozen.tick(0.2)
            app.settle_memory()
        assert len(released) == 3
        frozen.tick(6.0)
        app.settle_memory()
        assert len(released) == 4
    app.executor.shutdown()
