"""Reloading a running exporter, without processes: which targets survive, what the metrics and
the log say, and the web config's files re-read when they change."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from exporter.app import Application, build_application
from exporter.refresh import TargetSnapshot
from exporter.reload import Reloader, ReloadError, ReloadStatus, plan_reload
from exporter.settings import ExporterSettings, load_config_file
from exporter.state import StateStore
from exporter.targets import SwitchableSource
from exporter.webconfig import load_web_config
from exporter.webwatch import CHECK_INTERVAL_SECONDS, WebConfigSource
from tests.support.fakes import T0, FakeApi, FakeClock, make_refresher, result
from tests.support.tls import basic_auth_header, self_signed, write_bcrypt_web_config
from tests.test_refresh import wait_until

# --- which targets survive: one pure function -------------------------------------------------


def test_unchanged_identities_are_kept_new_ones_start_and_missing_ones_stop() -> None:
    running = {"a": "refresher-a", "b": "refresher-b", "c": "refresher-c"}
    plan = plan_reload(running, [("c", "C"), ("d", "D"), ("a", "A")])
    assert plan.keep == (("refresher-c", "C"), ("refresher-a", "A"))  # the new config's order
    assert plan.start == ("D",)
    assert plan.stop == ("refresher-b",)


def test_a_target_listed_twice_keeps_one_refresher_and_starts_another() -> None:
    plan = plan_reload({"a": "refresher-a"}, [("a", "first"), ("a", "second")])
    assert plan.keep == (("refresher-a", "first"),)
    assert plan.start == ("second",)
    assert plan.stop == ()


def test_nothing_running_starts_everything_and_nothing_wanted_stops_everything() -> None:
    assert plan_reload({}, [("a", 1), ("b", 2)]).start == (1, 2)
    assert plan_reload({"a": 1}, []).stop == (1,)


# --- applying a new configuration to an application ---------------------------------------------

TARGET = """
  - name: {name}
    region_id: cn-hangzhou
    endpoint: http://127.0.0.1:9
    credentials: {{source: static, access_key_id: {key_id}, access_key_secret: s3cret-{name}}}
    filters: {{command_id: {command}}}
"""


def settings(
    tmp_path: Path, *targets: tuple[str, str, str], workers: int | None = 2
) -> ExporterSettings:
    """(name, AccessKey id, command id filter) per target; ``workers=None``: not set."""
    text = "targets:\n" + "".join(
        TARGET.format(name=name, key_id=key_id, command=command)
        for name, key_id, command in targets
    )
    text += "" if workers is None else f"refresh: {{workers: {workers}}}\n"
    text += "api: {max_attempts: 1}\n"
    tmp_path.mkdir(exist_ok=True)
    path = tmp_path / "config.yml"
    path.write_text(text, encoding="utf-8")
    return load_config_file(path)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Application]:
    refused = httpx.MockTransport(lambda request: httpx.Response(503))
    built = build_application(
        settings(tmp_path, ("a", "LTAI5tKeyA", "c-1"), ("b", "LTAI5tKeyB", "c-1")),
        transport=refused,
        exporter_metrics=False,
    )
    yield built
    built.close()


def families(app: Application) -> str:
    assert app.exposition is not None
    return app.exposition.render("")[0].decode()


def test_a_reload_keeps_unchanged_targets_and_adds_and_removes_the_others(
    app: Application, tmp_path: Path
) -> None:
    a, b = app.refreshers
    summary = app.reconfigure(
        settings(tmp_path, ("c", "LTAI5tKeyC", "c-1"), ("a", "LTAI5tKeyA", "c-1"))
    )
    assert summary == "1 kept, 1 added (c/cn-hangzhou), 1 removed (b/cn-hangzhou)"
    c, kept = app.refreshers
    assert kept is a  # its tracker, counters and any refresh in flight with it
    assert (c.name, [t.account for t in app.targets]) == ("c", ["c", "a"])
    assert b.start_if_due() is None  # stopped
    text = families(app)
    assert 'account="b"' not in text
    assert 'target_info{account="c"' in text
    assert 'target_info{account="a"' in text


def test_a_changed_filter_is_a_new_target_and_a_changed_key_keeps_the_target(
    app: Application, tmp_path: Path
) -> None:
    a, b = app.refreshers
    assert isinstance(a.client, SwitchableSource)
    assert isinstance(b.client, SwitchableSource)
    client_a, client_b = a.client.client, b.client.client
    app.reconfigure(settings(tmp_path, ("a", "LTAI5tRotated", "c-1"), ("b", "LTAI5tKeyB", "c-2")))
    new_a, new_b = app.refreshers
    assert new_a is a
    assert a.client.client is not client_a
    assert new_b is not b  # reads other results: counts afresh
    # An unchanged reload rebuilds nothing.
    app.reconfigure(settings(tmp_path, ("a", "LTAI5tRotated", "c-1"), ("b", "LTAI5tKeyB", "c-2")))
    assert app.refreshers == [new_a, new_b]
    assert isinstance(new_b.client, SwitchableSource)
    assert new_b.client.client is not client_b


def test_a_refresh_of_a_kept_target_after_a_reload_counts_on(
    app: Application, tmp_path: Path
) -> None:
    a = app.refreshers[0]
    a.refresh_now(timeout=10)  # the API refuses: a failed refresh is counted
    before = a.latest().refreshes
    app.reconfigure(settings(tmp_path, ("a", "LTAI5tKeyA", "c-1")))
    a.refresh_now(timeout=10)
    assert a.latest().refreshes == before + 1
    assert 'refreshes_total{account="a",region_id="cn-hangzhou"} 2.0' in families(app)


# --- the reload itself: status, metrics, log ----------------------------------------------------


def test_the_reload_metrics_say_when_the_config_was_last_loaded_and_if_the_last_reload_failed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    status = ReloadStatus(clock)
    started = clock.now
    outcome: list[str] = []

    def load() -> object:
        if outcome and outcome[-1] == "bad":
            raise ReloadError("config.yml: targets[0].region_id: field required")
        return lambda: "1 kept, 0 added, 0 removed"

    reloader = Reloader(load, status)  # type: ignore[arg-type]
    assert status.read() == (True, started)
    clock.now += 60
    outcome.append("bad")
    with caplog.at_level(logging.INFO):
        refused = reloader.reload("SIGHUP")
    assert refused == "config.yml: targets[0].region_id: field required"
    assert status.read() == (False, started)
    [line] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert line.getMessage() == "reload refused, the running configuration is kept"
    assert line.err == refused  # type: ignore[attr-defined]
    clock.now += 60
    outcome.append("good")
    assert reloader.reload("http") is None
    assert status.read() == (True, clock.now)


def test_the_exposition_shows_the_reload_status(app: Application) -> None:
    version = app.snapshot_version()
    assert all(new is old for new, old in zip(app.snapshot_version(), version, strict=True))
    text = families(app)
    assert "aliyun_cloudassistant_exporter_config_last_reload_successful 1.0" in text
    app.reload_status.failed()
    assert app.snapshot_version()[-1] is not version[-1]  # a cached rendering is not reused
    text = families(app)
    assert "aliyun_cloudassistant_exporter_config_last_reload_successful 0.0" in text
    assert "aliyun_cloudassistant_exporter_config_last_reload_success_timestamp_seconds " in text


# --- the web config's files ---------------------------------------------------------------------


def test_a_renewed_certificate_is_loaded_and_a_broken_one_keeps_the_old(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = self_signed(tmp_path, "first")
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config: {{cert_file: {cert}, key_file: {key}}}\n")
    clock = FakeClock()
    source = WebConfigSource(load_web_config(path), path, clock=clock)
    first = source.ssl_context()
    self_signed(tmp_path, "second")  # cert-manager writes the renewed pair
    assert source.ssl_context() is first  # looked at most once per second
    clock.now += CHECK_INTERVAL_SECONDS
    second = source.ssl_context()
    assert second is not None
    assert second is not first
    # Half-written: a certificate that does not match the key is refused, the old one serves.
    cert.write_text("-----BEGIN CERTIFICATE-----\ntruncated\n")
    clock.now += CHECK_INTERVAL_SECONDS
    with caplog.at_level(logging.INFO):
        assert source.ssl_context() is second
        clock.now += CHECK_INTERVAL_SECONDS
        assert source.ssl_context() is second
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once per change, not once per second
    assert "tls_server_config.cert_file: not a PEM certificate" in errors[0].err  # type: ignore[attr-defined]
    self_signed(tmp_path, "third")
    clock.now += CHECK_INTERVAL_SECONDS
    assert source.ssl_context() not in (None, second)


def test_a_changed_basic_auth_user_applies_without_a_restart(tmp_path: Path) -> None:
    path = write_bcrypt_web_config(tmp_path, "prometheus", "old-password")
    clock = FakeClock()
    source = WebConfigSource(load_web_config(path), path, clock=clock)
    header = basic_auth_header("prometheus", "old-password")
    config = source.current()
    assert config is not None
    assert config.check_basic_auth(header)
    write_bcrypt_web_config(tmp_path, "prometheus", "new-password")
    clock.now += CHECK_INTERVAL_SECONDS
    config = source.current()
    assert config is not None
    assert not config.check_basic_auth(header)
    new_header = basic_auth_header("prometheus", "new-password")
    assert config.check_basic_auth(new_header)


def test_turning_tls_on_needs_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("{}\n")
    source = WebConfigSource(load_web_config(path), path)
    cert, key = self_signed(tmp_path, "on")
    path.write_text(f"tls_server_config: {{cert_file: {cert}, key_file: {key}}}\n")
    with pytest.raises(Exception, match="TLS is off in the running server; turning it on or off"):
        source.load()


def test_a_target_that_cannot_be_built_leaves_the_running_configuration_untouched(
    app: Application, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (list(app.refreshers), list(app.targets), app.settings)
    assert app.builder is not None
    source = app.refreshers[0].client
    assert isinstance(source, SwitchableSource)
    client = source.client

    def refuse(*args: object) -> None:
        raise ValueError("endpoint: refused by the client")

    monkeypatch.setattr(app.builder, "running", refuse)
    with pytest.raises(ValueError, match="refused by the client"):
        app.reconfigure(settings(tmp_path, ("a", "LTAI5tRotated", "c-1"), ("z", "LTAI5tZ", "c")))
    assert (app.refreshers, app.targets, app.settings) == before
    assert source.client is client  # the rotated key is not half-applied either


def test_what_a_reload_cannot_apply_is_logged(
    app: Application, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    new = settings(tmp_path, ("a", "LTAI5tKeyA", "c-1"), ("b", "LTAI5tKeyB", "c-1"), workers=3)
    with caplog.at_level(logging.WARNING):
        app.reconfigure(new)
    assert [r.getMessage() for r in caplog.records] == ["changed settings apply after a restart"]
    assert caplog.records[0].settings == "refresh.workers"  # type: ignore[attr-defined]


def test_scrapes_during_reloads_see_each_target_once(app: Application, tmp_path: Path) -> None:
    configs = [
        settings(tmp_path / "one", ("a", "LTAI5tKeyA", "c-1"), ("b", "LTAI5tKeyB", "c-1")),
        settings(tmp_path / "two", ("c", "LTAI5tKeyC", "c-1"), ("a", "LTAI5tKeyA", "c-1")),
    ]
    done = threading.Event()
    problems: list[str] = []

    def scrape() -> None:
        while not done.is_set():
            text = families(app)
            lines = [line for line in text.splitlines() if line.startswith("aliyun_")]
            if len(lines) != len(set(lines)):
                problems.append("a series twice")
            if text.count("# TYPE aliyun_cloudassistant_up gauge") != 1:
                problems.append("a family header twice")

    scrapers = [threading.Thread(target=scrape) for _ in range(2)]
    for thread in scrapers:
        thread.start()
    try:
        for round_ in range(40):
            app.reconfigure(configs[round_ % 2])
    finally:
        done.set()
        for thread in scrapers:
            thread.join()
    assert problems == []
    assert [r.name for r in app.refreshers] == ["c", "a"]  # the last one applied


def test_a_bug_in_a_reload_is_logged_and_the_running_configuration_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    status = ReloadStatus()

    def load() -> object:
        raise KeyError("boom")

    reloader = Reloader(load, status)  # type: ignore[arg-type]
    with caplog.at_level(logging.ERROR):
        refused = reloader.reload("SIGHUP")
    assert refused is not None
    assert "KeyError" in refused
    assert status.read()[0] is False
    [line] = caplog.records
    assert line.getMessage() == "reload failed, the running configuration is kept"


def test_a_reload_that_would_size_the_workers_otherwise_says_they_stay(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Without ``refresh.workers``, workers are one per target (at least 4), sized at start: a
    reload to more targets keeps them, and says so."""
    refused = httpx.MockTransport(lambda request: httpx.Response(503))
    app = build_application(
        settings(tmp_path, ("a", "LTAI5tKeyA", "c-1"), workers=None),
        transport=refused,
        exporter_metrics=False,
    )
    try:
        assert app.workers == 4
        targets = [(f"t{n}", f"LTAI5tKey{n:02d}", "c-1") for n in range(6)]
        with caplog.at_level(logging.WARNING):
            app.reconfigure(settings(tmp_path, *targets, workers=None))
        warned = [r for r in caplog.records if r.getMessage().startswith("refresh workers stay")]
        assert len(warned) == 1
        assert warned[0].after_restart == 6  # type: ignore[attr-defined]
        assert app.workers == 4
    finally:
        app.close()


# --- a target removed and added back: one writer of its state -----------------------------------


def test_a_removed_targets_refresh_in_flight_saves_nothing_over_the_target_added_back(
    tmp_path: Path,
) -> None:
    """Two reloads (a config tool writing the file twice) remove target a and add it back while
    a slow refresh of the removed refresher is in flight. The new refresher restored a's state
    and counts on; the old refresh, ending later, must not save over it: after a restart the
    counters are those served, and every run is counted once."""
    clock = FakeClock()
    api = FakeApi([result("t-0", start=T0 - 100)])  # the backlog
    slow_api = FakeApi()  # what the removed refresher reads: answers held at a gate
    slow_api.records = api.records
    both = settings(tmp_path, ("a", "LTAI5tKeyA", "c-1"), ("b", "LTAI5tKeyB", "c-1"))
    only_b = settings(tmp_path / "b", ("b", "LTAI5tKeyB", "c-1"))
    app = build_application(
        both,
        transport=httpx.MockTransport(lambda request: httpx.Response(503)),
        exporter_metrics=False,
        state=StateStore(tmp_path / "state"),
        clock=clock,
    )
    try:
        old = app.running[0]
        old.source.client = slow_api
        old.refresher.refresh_now(10)  # the first walk
        api.records.insert(0, result("t-1", start=T0, finished=T0 + 5))
        clock.advance(60)
        assert sum(finished(old.refresher.refresh_now(10)).values()) == 1  # saved, served
        api.records.insert(0, result("t-2", start=T0 + 30, finished=T0 + 35))
        slow_api.records = list(api.records)  # the slow answer shows the list as it is now
        slow_api.gate = threading.Event()
        clock.advance(60)
        calls = len(slow_api.calls)
        in_flight = old.refresher.start_if_due()
        assert in_flight is not None
        wait_until(lambda: len(slow_api.calls) > calls)  # held at the gate

        app.reconfigure(only_b)
        app.reconfigure(both)
        new = app.running[0]
        assert new.refresher is not old.refresher
        new.source.client = api
        clock.advance(60)
        assert new.refresher.refresh_now(10).state == "restored"
        api.records.insert(0, result("t-3", "i-2", "Failed", start=T0 + 150, finished=T0 + 155))
        clock.advance(60)
        served = finished(new.refresher.refresh_now(10))
        assert served == {("Success", ""): 2, ("Failed", ""): 1}

        slow_api.gate.set()  # the removed refresher's refresh ends, after the new one counted
        in_flight.result(10)
    finally:
        app.close()

    # A restart: the counters resume where they were served, and a refresh counts nothing new.
    store = StateStore(tmp_path / "state")
    try:
        with ThreadPoolExecutor(1) as executor:
            again = make_refresher(
                api, executor, clock, "a", store=store.target(new.identity, "a/cn-hangzhou")
            )
            assert finished(again.latest()) == served
            clock.advance(60)
            assert finished(again.refresh_now(10)) == served
    finally:
        store.close()


def finished(snapshot: TargetSnapshot) -> Counter[tuple[str, str]]:
    return Counter({label: n for label, n in snapshot.counters.finished if n})
