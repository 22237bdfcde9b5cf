"""Reloads, signals and certificate renewals against the real ``python -m exporter`` process.

The ECS API is the simulator, in the test process, with a manual world clock (see
tests/test_exporter_integration.py): what a kept target counts across a reload is compared with
the simulator's ground truth exactly.
"""

from __future__ import annotations

import functools
import http.client
import json
import signal
import ssl
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from exporter.simulator.world import ManualClock, World, WorldSpec
from tests.conftest import StartExporter
from tests.exporter_process import UNREACHABLE_API, ExporterProcess, run_cli
from tests.exposition import PREFIX, Samples, sample_key
from tests.support.tls import common_name, self_signed, write_bcrypt_web_config
from tests.test_exporter_integration import (
    REGION,
    expected_finished,
    exported_finished,
    scrape,
    simulator_for,
    static_target,
    wait_for,
    write_config,
)

pytestmark = pytest.mark.slow

RELOADED = "configuration reloaded"
REFUSED = "reload refused, the running configuration is kept"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=float(int(time.time())))


def until(condition: Callable[[], bool], exporter: ExporterProcess, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in time; exporter log:\n{exporter.log_text()}")
        time.sleep(0.05)


def reloads(exporter: ExporterProcess, message: str) -> int:
    return len(exporter.lines(message))


def sighup(exporter: ExporterProcess, message: str = RELOADED) -> None:
    """SIGHUP, and wait for its outcome (``message``) in the log."""
    before = reloads(exporter, message)
    exporter.process.send_signal(signal.SIGHUP)
    until(lambda: reloads(exporter, message) > before, exporter)


def gauge(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get(sample_key(name, **labels))


def accounts(samples: Samples) -> set[str]:
    return {
        dict(labels)["account"]
        for (name, labels), _ in samples.items()
        if name == PREFIX + "up" and "account" in dict(labels)
    }


def refreshes(samples: Samples, account: str) -> float:
    return samples[sample_key("refreshes_total", account=account, region_id=REGION)]


def last_refresh(samples: Samples, account: str) -> float:
    key = sample_key("last_refresh_success_timestamp_seconds", account=account, region_id=REGION)
    return samples[key]


def rewrite(path: Path, simulator: Any, targets: list[dict[str, Any]]) -> None:
    write_config(path.parent, simulator, targets)


def ignored(exporter: ExporterProcess, name: str) -> bool:
    return any(f"signal={name}" in line for line in exporter.lines("signal ignored"))


def json_lines(exporter: ExporterProcess, message: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in exporter.lines(message)]


# --- targets added and removed ------------------------------------------------------------------


def test_sighup_adds_and_removes_targets_and_the_kept_one_counts_on_exactly_once(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter
) -> None:
    world = World(seed=5, clock=clock, spec=WorldSpec(instances=10))
    world.add_invocation(3, "Success", at=clock.now() - 3600, duration=5)  # backlog
    with simulator_for(world) as simulator:
        config = write_config(tmp_path, simulator, [static_target("prod"), static_target("old")])
        exporter = start_exporter(["--config.file", str(config)])
        samples = wait_for(exporter, lambda s: min(refreshes(s, "prod"), refreshes(s, "old")) >= 1)
        baseline = clock.now()
        loaded_at = gauge(samples, "exporter_config_last_reload_success_timestamp_seconds")
        assert gauge(samples, "exporter_config_last_reload_successful") == 1
        world.add_invocation(4, "Failed", duration=3)
        clock.advance(20)
        expected = expected_finished(world, world.ground_truth(), baseline)
        assert sum(expected.values()) > 0
        samples = wait_for(exporter, lambda s: exported_finished(s, "prod") == expected)
        counted_refreshes = refreshes(samples, "prod")

        rewrite(config, simulator, [static_target("prod"), static_target("new")])
        sighup(exporter)
        [line] = exporter.lines(RELOADED)
        assert "1 kept, 1 added (new/cn-hangzhou), 1 removed (old/cn-hangzhou)" in line
        samples = wait_for(exporter, lambda s: accounts(s) == {"prod", "new"})
        # The kept target: no counter reset and no new baseline.
        assert exported_finished(samples, "prod") == expected
        assert refreshes(samples, "prod") >= counted_refreshes
        assert gauge(samples, "exporter_config_last_reload_successful") == 1
        reloaded_at = gauge(samples, "exporter_config_last_reload_success_timestamp_seconds")
        assert reloaded_at is not None
        assert loaded_at is not None
        assert reloaded_at > loaded_at

        # The world moves on: the kept target counts every run since its first baseline once;
        # the new one counts from its own first refresh.
        samples = wait_for(exporter, lambda s: refreshes(s, "new") >= 1)
        new_baseline = clock.now()
        world.add_invocation(5, "Success", duration=2)
        world.add_invocation(2, "Timeout", duration=4)
        clock.advance(20)
        truth = world.ground_truth()
        expected = expected_finished(world, truth, baseline)
        expected_new = expected_finished(world, truth, new_baseline)
        wait_for(
            exporter,
            lambda s: (
                exported_finished(s, "prod") == expected
                and exported_finished(s, "new") == expected_new
            ),
        )
        assert exported_finished(scrape(exporter), "prod") - expected == Counter()


# --- a bad configuration ------------------------------------------------------------------------


def test_a_bad_config_on_reload_is_refused_with_the_start_up_error_and_the_old_one_runs_on(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter
) -> None:
    world = World(seed=3, clock=clock, spec=WorldSpec(instances=5))
    with simulator_for(world) as simulator:
        config = write_config(tmp_path, simulator, [static_target("prod")])
        good = config.read_text()
        exporter = start_exporter(["--config.file", str(config), "--log.format", "json"])
        wait_for(exporter, lambda s: refreshes(s, "prod") >= 1)
        bad = yaml.safe_load(good)
        bad["targets"][0]["region_id"] = "not a region!"
        config.write_text(yaml.safe_dump(bad))
        checked = run_cli(["--config.file", str(config), "--config.check"])
        assert checked.code == 2
        startup_error = checked.stderr.strip().removeprefix(
            "aliyun-cloudassistant-exporter: error: "
        )

        sighup(exporter, REFUSED)
        [refused] = json_lines(exporter, REFUSED)
        assert refused["level"] == "error"
        assert refused["err"] == startup_error  # one line, the words of a start-up
        assert refused["trigger"] == "SIGHUP"
        samples = scrape(exporter)
        assert gauge(samples, "exporter_config_last_reload_successful") == 0
        assert accounts(samples) == {"prod"}
        # The running configuration goes on refreshing.
        before = last_refresh(samples, "prod")
        clock.advance(20)
        wait_for(exporter, lambda s: last_refresh(s, "prod") > before)
        # Fixed: the next reload succeeds.
        config.write_text(good)
        sighup(exporter)
        assert gauge(scrape(exporter), "exporter_config_last_reload_successful") == 1


def test_an_alias_bomb_on_reload_is_refused_at_once_and_the_process_still_stops(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter
) -> None:
    # 1 KB of nested aliases standing for 9^10 values: every walk of it used to run for hours
    # at 100% CPU, and SIGTERM was never acted upon.
    bomb = Path(__file__).parent / "bad_configs" / "alias_bomb.yml"
    world = World(seed=3, clock=clock, spec=WorldSpec(instances=5))
    with simulator_for(world) as simulator:
        config = write_config(tmp_path, simulator, [static_target("prod")])
        exporter = start_exporter(["--config.file", str(config), "--log.format", "json"])
        wait_for(exporter, lambda s: refreshes(s, "prod") >= 1)
        config.write_text(bomb.read_text())
        sighup(exporter, REFUSED)
        [refused] = json_lines(exporter, REFUSED)
        assert "expands to more than" in refused["err"]
        samples = scrape(exporter)
        assert accounts(samples) == {"prod"}
        assert gauge(samples, "exporter_config_last_reload_successful") == 0
        exporter.process.send_signal(signal.SIGTERM)
        assert exporter.process.wait(15) == 0


# --- POST /-/reload -----------------------------------------------------------------------------


def test_post_reload_needs_the_lifecycle_flag_as_in_prometheus(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter
) -> None:
    world = World(seed=3, clock=clock, spec=WorldSpec(instances=5))
    with simulator_for(world) as simulator:
        config = write_config(tmp_path, simulator, [static_target("prod")])
        exporter = start_exporter(["--config.file", str(config)])
        response = httpx.post(exporter.url + "/-/reload")
        assert (response.status_code, response.text) == (403, "Lifecycle API is not enabled.\n")
        assert httpx.put(exporter.url + "/-/reload").status_code == 403
        response = httpx.get(exporter.url + "/-/reload")
        assert (response.status_code, response.headers["allow"]) == (405, "POST, PUT")
        assert reloads(exporter, RELOADED) == 0


def test_post_reload_with_the_lifecycle_flag_reloads_or_says_why_not(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter
) -> None:
    world = World(seed=3, clock=clock, spec=WorldSpec(instances=5))
    with simulator_for(world) as simulator:
        config = write_config(tmp_path, simulator, [static_target("prod")])
        exporter = start_exporter(["--config.file", str(config), "--web.enable-lifecycle"])
        wait_for(exporter, lambda s: refreshes(s, "prod") >= 1)
        rewrite(config, simulator, [static_target("prod"), static_target("second")])
        response = httpx.post(exporter.url + "/-/reload", timeout=30)
        assert (response.status_code, response.text) == (200, "")
        assert accounts(scrape(exporter)) == {"prod", "second"}
        config.write_text("targets: []\n")
        response = httpx.post(exporter.url + "/-/reload", timeout=30)
        assert response.status_code == 500
        assert response.text.startswith("failed to reload config: ")
        assert "targets" in response.text
        samples = scrape(exporter)
        assert accounts(samples) == {"prod", "second"}
        assert gauge(samples, "exporter_config_last_reload_successful") == 0
        assert len(exporter.lines(REFUSED)) == 1


# --- signals ------------------------------------------------------------------------------------


def test_no_signal_ends_the_process_silently(tmp_path: Path, start_exporter: StartExporter) -> None:
    exporter = start_exporter(
        [],
        env=UNREACHABLE_API,
    )
    for signum in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
        exporter.process.send_signal(signum)
        until(functools.partial(ignored, exporter, signum.name), exporter)
    sighup(exporter)  # from the environment: read again, nothing changed
    assert "1 kept, 0 added, 0 removed" in exporter.lines(RELOADED)[0]
    assert httpx.get(exporter.url + "/-/healthy").status_code == 200
    exporter.process.send_signal(signal.SIGQUIT)
    assert exporter.process.wait(15) == 0
    exporter.stop()
    [line] = exporter.lines("shutting down")
    assert "signal=SIGQUIT" in line
    assert exporter.lines("stopped")


# --- certificates renewed under a running exporter ----------------------------------------------


def served_name(url: str) -> str:
    """The common name of the certificate a new TLS connection to ``url`` is served."""
    host, port = url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test reads the certificate, it does not trust it
    connection = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        connection.request("GET", "/-/healthy")
        assert connection.getresponse().read() == b"Healthy\n"
        der = connection.sock.getpeercert(binary_form=True)
        assert der is not None
        return common_name(der)
    finally:
        connection.close()


def test_a_renewed_certificate_is_served_to_new_connections_without_a_restart(
    tmp_path: Path, start_exporter: StartExporter
) -> None:
    self_signed(tmp_path, "first")
    web_config = tmp_path / "web.yml"
    web_config.write_text("tls_server_config: {cert_file: tls.crt, key_file: tls.key}\n")
    exporter = start_exporter(
        ["--web.config.file", str(web_config)],
        env=UNREACHABLE_API,
    )
    assert exporter.url.startswith("https://")
    assert served_name(exporter.url) == "first"
    # A keep-alive connection opened before the renewal.
    host, port = exporter.url.removeprefix("https://").rsplit(":", 1)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    old = http.client.HTTPSConnection(host, int(port), context=context, timeout=10)
    try:
        old.request("GET", "/-/healthy")
        assert old.getresponse().read() == b"Healthy\n"
        local = old.sock.getsockname()

        self_signed(tmp_path, "second")  # cert-manager renews the pair
        until(lambda: served_name(exporter.url) == "second", exporter)
        # The connection opened before goes on, with the certificate of its handshake.
        old.request("GET", "/-/healthy")
        assert old.getresponse().read() == b"Healthy\n"
        assert old.sock.getsockname() == local
        der = old.sock.getpeercert(binary_form=True)
        assert der is not None
        assert common_name(der) == "first"
    finally:
        old.close()

    # A broken renewal: logged, and the last good certificate keeps serving.
    (tmp_path / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\nhalf-written\n")
    not_loaded = "changed web config not loaded, the previous one keeps serving"
    until(
        lambda: served_name(exporter.url) == "second" and bool(exporter.lines(not_loaded)), exporter
    )
    assert served_name(exporter.url) == "second"
    [error] = exporter.lines(not_loaded)
    assert "not a PEM certificate" in error
    self_signed(tmp_path, "third")
    until(lambda: served_name(exporter.url) == "third", exporter)


def test_reload_sits_behind_basic_auth_and_a_changed_password_applies_without_a_restart(
    tmp_path: Path, start_exporter: StartExporter
) -> None:
    web_config = write_bcrypt_web_config(tmp_path, "prometheus", "first-password")
    exporter = start_exporter(
        ["--web.config.file", str(web_config), "--web.enable-lifecycle"],
        env=UNREACHABLE_API,
    )
    assert httpx.post(exporter.url + "/-/reload").status_code == 401
    assert reloads(exporter, RELOADED) == 0
    first = ("prometheus", "first-password")
    assert httpx.post(exporter.url + "/-/reload", auth=first, timeout=30).status_code == 200
    write_bcrypt_web_config(tmp_path, "prometheus", "second-password")
    second = ("prometheus", "second-password")
    until(lambda: httpx.get(exporter.url + "/-/healthy", auth=second).status_code == 200, exporter)
    assert httpx.get(exporter.url + "/-/healthy", auth=first).status_code == 401


def test_targets_added_by_a_reload_are_kept_across_a_restart(
    tmp_path: Path, clock: ManualClock, start_exporter: StartExporter
) -> None:
    world = World(seed=7, clock=clock, spec=WorldSpec(instances=6))
    world.add_invocation(2, "Success", at=clock.now() - 3600, duration=5)
    state = f"--storage.path={tmp_path / 'state'}"
    with simulator_for(world) as simulator:
        config = write_config(tmp_path, simulator, [static_target("prod")])
        exporter = start_exporter(["--config.file", str(config), state])
        wait_for(exporter, lambda s: refreshes(s, "prod") >= 1)
        rewrite(config, simulator, [static_target("prod"), static_target("new")])
        sighup(exporter)
        wait_for(exporter, lambda s: refreshes(s, "new") >= 1)
        baseline = clock.now()
        world.add_invocation(3, "Failed", duration=2)
        clock.advance(20)
        expected = expected_finished(world, world.ground_truth(), baseline)
        wait_for(
            exporter,
            lambda s: (
                exported_finished(s, "prod") == expected and exported_finished(s, "new") == expected
            ),
        )
        assert exporter.stop() == 0

        restarted = start_exporter(["--config.file", str(config), state])
        samples = scrape(restarted)  # the saved counters, from the first scrape
        assert exported_finished(samples, "prod") == expected
        assert exported_finished(samples, "new") == expected
