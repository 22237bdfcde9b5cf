"""Sharding: every configured target is owned, refreshed and exported by exactly one shard.

The end-to-end test runs three real exporter processes (one of them told its shard by a
StatefulSet pod name) against the API simulator, with one world per region on a manual clock,
and compares each target's counters with the simulator's ground truth.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from exporter.cli import main
from exporter.settings import load_config_file
from exporter.sharding import (
    MAX_WORKERS,
    MIN_WORKERS,
    Sharding,
    ShardingError,
    ordinal_of_pod,
    owner,
    refresh_workers,
    sharding_from_flags,
)
from exporter.simulator.server import SimulatorServer
from exporter.simulator.world import ManualClock, World, WorldSpec
from exporter.targets import identity_of as target_identity
from tests.conftest import StartExporter
from tests.exporter_process import ExporterProcess, run_cli
from tests.exposition import PREFIX, Samples, parse_samples
from tests.test_exporter_integration import expected_finished, write_config

KEY_ID, KEY_SECRET = "LTAI5tShardingKey", "sharding-secret-value-1234"
REGIONS = ("cn-hangzhou", "cn-beijing", "cn-shanghai")
ACCOUNTS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")
SHARDS = 3

# --- which shard owns what ----------------------------------------------------------------------


def test_the_owner_of_an_identity_never_changes() -> None:
    # Users' shards must not move between versions, machines or starts: pinned owners (a
    # digest, never Python's hash(), which changes with every process).
    assert [owner(f"target-{n}", 7) for n in range(8)] == [5, 3, 6, 5, 5, 0, 6, 5]


def test_each_target_has_exactly_one_owner_and_the_split_is_even() -> None:
    identities = [f"account-{n}/region-{n % 7}" for n in range(3000)]
    owners = Counter(
        shard for identity in identities for shard in range(5) if Sharding(shard, 5).owns(identity)
    )
    assert sum(owners.values()) == len(identities)  # no target owned twice or never
    assert all(500 <= owners[shard] <= 700 for shard in range(5)), owners


def test_a_single_shard_owns_everything() -> None:
    items = ["a", "b", "c"]
    assert Sharding().select(items, str) == items
    assert Sharding(0, 1).owns("anything")


def test_the_identity_is_what_the_target_reads(tmp_path: Path) -> None:
    def identities(targets: str) -> list[str]:
        config = tmp_path / "config.yml"
        config.write_text(f"targets:\n{targets}", encoding="utf-8")
        return [target_identity(t) for t in load_config_file(config).expanded_targets()]

    four = identities(
        "  - {name: a, region_ids: [cn-hangzhou, cn-beijing]}\n"
        "  - {name: b, region_id: cn-hangzhou, filters: {command_id: c-1}}\n"
        "  - {name: c, region_id: cn-hangzhou, filters: {command_id: c-2}}\n"
    )
    assert len(set(four)) == 4
    # Credentials are not part of it: rotating a key does not move a target to another shard.
    rotated = identities(
        "  - name: a\n    region_ids: [cn-hangzhou, cn-beijing]\n"
        "    credentials: {source: static, access_key_id: k2, access_key_secret: s2}\n"
    )
    assert rotated == four[:2]


@pytest.mark.parametrize(
    ("pod", "ordinal"),
    [("exporter-0", 0), ("aliyun-cloudassistant-exporter-12", 12), ("a-b-3", 3)],
)
def test_the_ordinal_of_a_statefulset_pod(pod: str, ordinal: int) -> None:
    assert ordinal_of_pod(pod) == ordinal


@pytest.mark.parametrize(
    "pod",
    [
        "exporter",
        "exporter-",
        "exporter-01",
        "exporter-x",
        "7",
        "exporter-2\n",
        "exporter-" + "9" * 5000,
        "-1",  # no name: not shard 1
        "exporter--1",  # a negative number, not shard 1
    ],
)
def test_a_name_without_an_ordinal_is_refused(pod: str) -> None:
    with pytest.raises(ShardingError, match="not a StatefulSet pod name"):
        ordinal_of_pod(pod)


def test_flags_give_the_shard() -> None:
    assert sharding_from_flags(None, None, None) == Sharding(0, 1)
    assert sharding_from_flags(2, 3, None) == Sharding(2, 3)
    assert sharding_from_flags(None, 3, "exporter-1") == Sharding(1, 3)
    assert sharding_from_flags(0, 1, None) == Sharding(0, 1)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--shard=3", "--total-shards=3"], "--shard=3: must be between 0 and 2"),
        (["--shard=1", "--total-shards=1"], "--shard=1: must be between 0 and 0"),
        (["--total-shards=0"], "--total-shards=0: must be between 1 and 1000"),
        (["--total-shards=3"], "--total-shards=3 needs --shard (0 to 2) or --pod"),
        (["--shard=1"], "--shard needs --total-shards"),
        (["--pod=exporter-1"], "--pod needs --total-shards"),
        (["--shard=0", "--pod=x-0", "--total-shards=2"], "--shard and --pod exclude each other"),
        (["--pod=exporter-5", "--total-shards=3"], "--shard=5: must be between 0 and 2"),
        (["--pod=exporter", "--total-shards=3"], "not a StatefulSet pod name"),
        (["--pod=", "--total-shards=3"], "--pod: empty pod name"),
        (["--pod=-1", "--total-shards=3"], "--pod='-1': not a StatefulSet pod name"),
        (
            ["--pod=" + "x" * 10_000 + "-1", "--total-shards=3"],
            "--pod: 10002 characters, not a StatefulSet pod name",
        ),
    ],
)
def test_bad_sharding_flags_exit_2_with_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    assert main(["--config.check", *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("aliyun-cloudassistant-exporter: error: ")
    assert expected in line


@pytest.mark.parametrize("value", ["-1", "1.5", "two", "٣"])
def test_a_shard_that_is_not_a_whole_number_is_a_bad_flag(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        main([f"--shard={value}", "--total-shards=3"])
    assert caught.value.code == 2
    assert "must be a whole number" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["-1", "1.5", "two"])
def test_a_total_that_is_not_a_whole_number_says_at_least_1(
    capsys: pytest.CaptureFixture[str], value: str
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--shard=0", f"--total-shards={value}"])
    assert caught.value.code == 2
    expected = f"argument --total-shards: {value!r} must be a whole number of shards, at least 1"
    assert expected in capsys.readouterr().err


def test_a_shard_number_of_thousands_of_digits_is_a_bad_flag_not_a_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--shard=" + "7" * 5000, "--total-shards=3"])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert "is too large (5000 digits)" in err
    assert "Traceback" not in err
    assert len(err) < 2000  # the value is not echoed whole


def test_sharding_cannot_be_combined_with_the_demo(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["--demo", "--shard=0", "--total-shards=2"])
    assert caught.value.code == 2
    assert "--demo cannot be combined with --shard" in capsys.readouterr().err


def test_config_check_says_which_targets_the_shard_owns(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "targets:\n  - {name: a, region_ids: [cn-hangzhou, cn-beijing, cn-shanghai]}\n",
        encoding="utf-8",
    )
    owned = []
    for shard in range(2):
        result = run_cli(
            ["--config.check", f"--config.file={config}", f"--shard={shard}", "--total-shards=2"]
        )
        assert result.code == 0, result.stderr
        (line,) = [line for line in result.stdout.splitlines() if "counted from 0" in line]
        assert f"shard {shard} of 2" in line
        owned.append(int(line.split(": ")[-1].split(" of ")[0]))
    assert sum(owned) == 3


# --- how many targets refresh at once -----------------------------------------------------------


def test_workers_scale_with_the_targets_within_bounds() -> None:
    assert refresh_workers(None, 1) == MIN_WORKERS
    assert refresh_workers(None, 20) == 20
    assert refresh_workers(None, 300) == MAX_WORKERS == 64
    assert refresh_workers(2, 300) == 2  # refresh.workers overrides


# --- three shards against the simulator ---------------------------------------------------------

Target = tuple[str, str]  # (account, region_id)


def _config(tmp_path: Path, simulator: SimulatorServer, accounts: tuple[str, ...]) -> Path:
    targets: list[dict[str, Any]] = [
        {
            "name": account,
            "region_ids": list(REGIONS),
            "credentials": {
                "source": "static",
                "access_key_id": KEY_ID,
                "access_key_secret": KEY_SECRET,
            },
        }
        for account in accounts
    ]
    return write_config(tmp_path, simulator, targets)


def _scrape(exporter: ExporterProcess) -> Samples:
    answer = httpx.get(exporter.url + "/metrics", timeout=30)
    answer.raise_for_status()
    return parse_samples(answer.text)


def _by_target(
    samples: Samples, name: str
) -> dict[Target, dict[tuple[tuple[str, str], ...], float]]:
    """``{(account, region): {other labels: value}}`` of one family."""
    found: dict[Target, dict[tuple[tuple[str, str], ...], float]] = {}
    for (sample_name, labels), value in samples.items():
        if sample_name != PREFIX + name:
            continue
        label_map = dict(labels)
        target = (label_map.pop("account"), label_map.pop("region_id"))
        found.setdefault(target, {})[tuple(sorted(label_map.items()))] = value
    return found


def _finished(samples: Samples) -> dict[Target, Counter[tuple[str, str]]]:
    counted: dict[Target, Counter[tuple[str, str]]] = {}
    for target, rows in _by_target(samples, "invocation_results_finished_total").items():
        counter: Counter[tuple[str, str]] = Counter()
        for labels, value in rows.items():
            label_map = dict(labels)
            if value:
                counter[(label_map["invocation_status"], label_map["error_code"])] = int(value)
        counted[target] = counter
    return counted


def _refreshes(samples: Samples) -> dict[Target, float]:
    return {t: rows[()] for t, rows in _by_target(samples, "refreshes_total").items()}


def _wait_all(
    shards: list[ExporterProcess], done: Any, what: str, timeout: float = 30.0
) -> list[Samples]:
    deadline = time.monotonic() + timeout
    while True:
        scraped = [_scrape(shard) for shard in shards]
        if done(scraped):
            return scraped
        if time.monotonic() > deadline:
            logs = "\n\n".join(shard.log_text() for shard in shards)
            raise AssertionError(f"{what}: not in time; logs:\n{logs}")
        time.sleep(0.05)


def _value(samples: Samples, name: str) -> float:
    return samples[(PREFIX + name, ())]


def test_three_shards_serve_every_target_exactly_once_and_count_the_ground_truth(
    tmp_path: Path, start_exporter: StartExporter
) -> None:
    clock = ManualClock(start=float(int(time.time())))
    worlds = {
        region: World(seed=n, clock=clock, spec=WorldSpec(instances=10))
        for n, region in enumerate(REGIONS)
    }
    for world in worlds.values():  # a backlog, finished before the exporters start
        world.add_invocation(3, ["Success", "Failed", "Success"], at=clock.now() - 3600, duration=5)
    with SimulatorServer(worlds, accounts={KEY_ID: KEY_SECRET}) as simulator:
        # The endpoint (a free port) is part of a target's identity: take accounts until every
        # shard owns a target (three targets each; nearly always the first two or three).
        for count in range(1, len(ACCOUNTS) + 1):
            config = _config(tmp_path, simulator, ACCOUNTS[:count])
            owners = {
                (t.account, t.region_id): owner(target_identity(t), SHARDS)
                for t in load_config_file(config).expanded_targets()
            }
            if set(owners.values()) == set(range(SHARDS)):
                break
        assert set(owners.values()) == set(range(SHARDS)), "every shard owns a target here"
        targets = set(owners)
        shards = [
            start_exporter([f"--config.file={config}", "--shard=0", f"--total-shards={SHARDS}"]),
            start_exporter([f"--config.file={config}", "--shard=1", f"--total-shards={SHARDS}"]),
            # A StatefulSet pod: the ordinal comes from its name.
            start_exporter(
                [f"--config.file={config}", "--pod=cloudassistant-2", f"--total-shards={SHARDS}"]
            ),
        ]
        scraped = _wait_all(
            shards,
            lambda all_samples: all(
                len(_refreshes(s)) == sum(1 for o in owners.values() if o == n)
                and all(v >= 1 for v in _refreshes(s).values())
                for n, s in enumerate(all_samples)
            ),
            "first refresh of every owned target",
        )
        # Each shard exports exactly its own targets, and says so.
        for n, samples in enumerate(scraped):
            mine = {t for t, o in owners.items() if o == n}
            assert set(_refreshes(samples)) == mine
            assert set(_by_target(samples, "up")) == mine
            assert _value(samples, "exporter_shard_ordinal") == n
            assert _value(samples, "exporter_total_shards") == SHARDS
            assert _value(samples, "exporter_owned_targets") == len(mine)
            assert _value(samples, "exporter_configured_targets") == len(targets)
            page = httpx.get(shards[n].url + "/", timeout=10).text
            summary = (
                f"shard {n} of {SHARDS} (counted from 0): {len(mine)} of {len(targets)} targets"
            )
            assert summary in page
        baseline = clock.now()
        outcomes = ["Success", "Failed", "Timeout", "Cancelled", "Error"]
        for step in range(4):
            for n, world in enumerate(worlds.values()):
                world.add_invocation(2 + n, outcomes[(step + n) % len(outcomes)], duration=3)
            clock.advance(10)
        clock.advance(60)  # every run finished
        expected = {
            (account, region): expected_finished(
                worlds[region], worlds[region].ground_truth(), baseline
            )
            for account, region in targets
        }
        assert all(sum(counts.values()) > 0 for counts in expected.values())

        def counted_everything(all_samples: list[Samples]) -> bool:
            union: dict[Target, Counter[tuple[str, str]]] = {}
            for samples in all_samples:
                union.update(_finished(samples))
            return union == expected

        scraped = _wait_all(shards, counted_everything, "the ground truth counted")
        seen: Counter[Target] = Counter()
        for samples in scraped:
            seen.update(_finished(samples).keys())
        assert seen == Counter(dict.fromkeys(targets, 1)), "every target served exactly once"
        total_owned = sum(_value(samples, "exporter_owned_targets") for samples in scraped)
        assert total_owned == len(targets)


def test_a_shard_without_targets_is_ready_exports_none_and_says_so(
    tmp_path: Path, start_exporter: StartExporter
) -> None:
    config = tmp_path / "config.yml"
    config.write_text(
        "targets:\n"
        "  - name: lonely\n"
        "    region_id: cn-hangzhou\n"
        "    endpoint: http://127.0.0.1:9\n"  # never called: this shard does not own it
        "    credentials: {source: static, access_key_id: k, access_key_secret: s}\n",
        encoding="utf-8",
    )
    (target,) = load_config_file(config).expanded_targets()
    other = 1 - owner(target_identity(target), 2)
    exporter = start_exporter([f"--config.file={config}", f"--shard={other}", "--total-shards=2"])
    assert httpx.get(exporter.url + "/-/ready", timeout=10).status_code == 200
    samples = _scrape(exporter)
    assert _value(samples, "exporter_owned_targets") == 0
    assert _value(samples, "exporter_configured_targets") == 1
    assert not _by_target(samples, "up")
    assert exporter.lines("this shard owns no target")
