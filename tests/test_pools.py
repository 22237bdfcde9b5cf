"""The ECS clients' connection pools: one per endpoint and region, shared by the accounts calling
it, and closed when no target uses them any more (a reload) or at shutdown."""

from __future__ import annotations

import ssl
from concurrent.futures import Future
from pathlib import Path

import pytest

from exporter.app import build_application, when_all_done
from exporter.ecs.pools import ApiPools
from exporter.settings import ExporterSettings, load_config_file

TARGET = """
  - name: {name}
    region_ids: [{regions}]
    endpoint: http://127.0.0.1:9
    credentials: {{source: static, access_key_id: {key_id}, access_key_secret: s3cret-{name}}}
"""


def settings(tmp_path: Path, *targets: tuple[str, str, str]) -> ExporterSettings:
    """(name, AccessKey id, comma-separated regions) per target."""
    text = "targets:\n" + "".join(
        TARGET.format(name=name, key_id=key_id, regions=regions)
        for name, key_id, regions in targets
    )
    path = tmp_path / "config.yml"
    path.write_text(text + "api: {max_attempts: 1}\n", encoding="utf-8")
    return load_config_file(path)


def test_one_pool_per_key_made_once_and_the_unused_ones_handed_back_for_closing() -> None:
    pools = ApiPools(ssl_context=ssl.create_default_context(), workers=4)
    hangzhou = pools.pool(("cn-hangzhou", None, False))
    assert pools.pool(("cn-hangzhou", None, False)) is hangzhou
    beijing = pools.pool(("cn-beijing", None, False))
    assert beijing is not hangzhou
    assert pools.retain({("cn-hangzhou", None, False)}) == [beijing]
    assert len(pools) == 1
    pools.close()
    assert len(pools) == 0


def test_the_action_runs_once_every_future_is_done() -> None:
    first, second = Future[None](), Future[None]()
    ran: list[str] = []
    when_all_done([first, second], lambda: ran.append("closed"))
    first.set_result(None)
    assert ran == []
    second.set_result(None)
    assert ran == ["closed"]
    when_all_done([first], lambda: ran.append("already done"))
    when_all_done([], lambda: ran.append("none pending"))
    assert ran == ["closed", "already done", "none pending"]


def test_accounts_of_a_region_share_its_pool_and_a_reload_closes_what_no_target_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    app = build_application(
        settings(
            tmp_path,
            ("a", "LTAI5tKeyA", "cn-hangzhou, cn-beijing"),
            ("b", "LTAI5tKeyB", "cn-hangzhou"),
        ),
        exporter_metrics=False,
    )
    try:
        assert app.api_pools is not None
        assert len(app.api_pools) == 2  # three targets, two regions
        app.reconfigure(settings(tmp_path, ("b", "LTAI5tKeyB", "cn-hangzhou")))
        assert len(app.api_pools) == 1
        app.reconfigure(settings(tmp_path, ("b", "LTAI5tKeyB", "cn-hangzhou, cn-shanghai")))
        assert len(app.api_pools) == 2
    finally:
        app.close()
    assert len(app.api_pools) == 0
