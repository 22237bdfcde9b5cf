"""The state directory: locking, bad files moved aside, migrations, trackers saved and restored."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from exporter.ecs.models import InvocationQuery, InvocationResult
from exporter.ecs.parsing import parse_page
from exporter.refresh import TargetRefresher
from exporter.server import TargetStatus, render_landing_page
from exporter.state import (
    APPLICATION_ID,
    DATABASE_NAME,
    FORGET_AFTER_SECONDS,
    MIGRATIONS,
    MOVED_ASIDE_REASONS,
    SCHEMA_VERSION,
    StateCollector,
    StateError,
    StateStore,
    target_identity,
)
from exporter.trackerstate import EncodedRows
from exporter.tracking import RunTracker
from tests.exporter_process import run_cli
from tests.support.fakes import FakeApi, backlog, make_refresher, result

T0 = 1_700_000_000.0


def finished(invoke_id: str, at: float, status: str = "Success") -> InvocationResult:
    return InvocationResult.of(
        invoke_id, "i-1", "", "c-1", status, "Finished", "", 0, at - 5, at, None, 1, 0, "", "", ()
    )


def counted(tracker: RunTracker) -> int:
    return sum(n for _, n in tracker.counter_totals().finished)


def save(store: StateStore, target_id: str, tracker: RunTracker) -> None:
    changes = tracker.export_changes()
    store.target(target_id, "prod/cn-hangzhou").save(changes)
    tracker.changes_saved(changes)


def restored(store: StateStore, target_id: str) -> tuple[RunTracker, str]:
    tracker = RunTracker()
    outcome = store.target(target_id, "prod/cn-hangzhou").restore_into(tracker)
    return tracker, outcome.state


def test_a_restarted_tracker_resumes_its_counters_and_counts_nothing_twice(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path)
    tracker = RunTracker()
    tracker.observe(finished("t-backlog", T0 - 100), now=T0)
    tracker.complete_baseline(at=T0)
    tracker.observe(finished("t-1", T0 + 10), now=T0 + 10)
    save(store, "target", tracker)
    store.close()

    store = StateStore(tmp_path)
    again, state = restored(store, "target")
    assert state == "restored"
    assert again.counter_totals() == tracker.counter_totals()
    assert again.baseline_done  # no second baseline: what finishes next is counted
    # Seen before the restart: not counted again; new ones are.
    again.observe(finished("t-1", T0 + 10), now=T0 + 20)
    again.observe(finished("t-backlog", T0 - 100), now=T0 + 20)
    assert counted(again) == 1
    again.observe(finished("t-2", T0 + 15), now=T0 + 20)
    assert counted(again) == 2


def test_what_only_some_entries_remember_is_saved_and_restored(tmp_path: Path) -> None:
    # A periodic task's, a watched run's and an OSS delivery's entries keep these in their
    # extras (most entries have none): a restart must take them back as they were.
    store = StateStore(tmp_path)
    tracker = RunTracker()
    scheduled = result("t-period", status="Scheduled", repeats=3, finished=T0 - 50)
    tracker.observe(finished("t-backlog", T0 - 100), now=T0)
    tracker.observe(scheduled, now=T0)
    tracker.complete_baseline(at=T0)
    tracker.observe(result("t-running", status="Running", start=T0 + 5), now=T0 + 10)
    tracker.observe(result("t-oss", oss="Finished", finished=T0 + 12), now=T0 + 15)
    view = tracker.view
    assert view[("t-backlog", "i-1", "")].extras is None
    assert view[scheduled.key].periodic
    assert view[("t-running", "i-1", "")].watched_run == 1
    assert view[("t-oss", "i-1", "")].oss_counted_run == 1
    save(store, "target", tracker)
    store.close()

    again, state = restored(StateStore(tmp_path), "target")
    assert state == "restored"
    assert dict(again.view) == dict(view)
    assert again.view[("t-backlog", "i-1", "")].extras is None


def test_a_steady_refresh_writes_nothing(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    tracker = RunTracker()
    tracker.complete_baseline(at=T0)
    tracker.observe(finished("t-1", T0 + 10), now=T0 + 10)
    save(store, "target", tracker)
    tracker.observe(finished("t-1", T0 + 10), now=T0 + 20)  # nothing new
    tracker.expire(T0 + 20)
    assert tracker.export_changes().empty
    tracker.observe(finished("t-2", T0 + 25), now=T0 + 30)
    changes = tracker.export_changes()
    assert len(changes.rows) == 1  # only the entry that changed, and the counters
    assert changes.summary is not None


def test_dropped_entries_are_deleted_and_the_database_stays_bounded(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    tracker = RunTracker(tracking_cap=100)
    tracker.complete_baseline(at=T0)
    for n in range(300):
        tracker.observe(finished(f"t-{n}", T0 + n), now=T0 + n)
        if n % 50 == 0:
            tracker.expire(T0 + n)
            save(store, "target", tracker)
    tracker.expire(T0 + 300)
    save(store, "target", tracker)
    store.close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 100
    again, _ = restored(StateStore(tmp_path), "target")
    assert len(again) == 100
    assert counted(again) == 300
    again.observe(finished("t-10", T0 + 10), now=T0 + 400)  # dropped by the cap: not again
    assert counted(again) == 300


def test_a_second_process_on_the_directory_is_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    with pytest.raises(StateError, match="in use by another exporter"):
        StateStore(tmp_path)
    store.close()
    StateStore(tmp_path).close()  # the lock went with the first one


def test_a_path_that_cannot_be_created_is_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory", encoding="utf-8")
    with pytest.raises(StateError, match="cannot create"):
        StateStore(blocker / "state")


def write_foreign(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE positions (file TEXT, offset INTEGER)")


def write_newer(path: Path) -> None:
    StateStore(path.parent).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")


def write_truncated(path: Path) -> None:
    store = StateStore(path.parent)
    tracker = RunTracker()
    tracker.complete_baseline(at=T0)
    for n in range(2000):
        tracker.observe(finished(f"t-{n}", T0 + n), now=T0 + n)
    save(store, "target", tracker)
    store.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def write_garbage(path: Path) -> None:
    path.write_bytes(b"\x00\x01 this is not a database " * 100)


def write_without_entries(path: Path) -> None:
    StateStore(path.parent).close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE entries")  # ours by id and version: every save would fail


def write_altered_columns(path: Path) -> None:
    StateStore(path.parent).close()
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE targets RENAME COLUMN summary TO counters")


def write_extra_table(path: Path) -> None:
    StateStore(path.parent).close()
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")


@pytest.mark.parametrize(
    ("writer", "reason"),
    [
        (write_garbage, "not_sqlite"),
        (write_foreign, "foreign"),
        (write_newer, "newer_schema"),
        (write_truncated, "corrupt"),
        (write_without_entries, "corrupt"),
        (write_altered_columns, "corrupt"),
        (write_extra_table, "corrupt"),
    ],
)
def test_a_bad_state_file_is_moved_aside_and_the_exporter_starts_afresh(
    tmp_path: Path, writer: object, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / DATABASE_NAME
    writer(path)  # type: ignore[operator]
    store = StateStore(tmp_path)
    assert store.moved_aside[reason] == 1
    assert "state file unusable, moved aside" in caplog.text
    assert list(tmp_path.glob(f"{DATABASE_NAME}.{reason}-*"))
    (family,) = StateCollector(store).collect()
    assert {s.labels["reason"]: s.value for s in family.samples if s.name.endswith("_total")} == {
        r: (1.0 if r == reason else 0.0) for r in MOVED_ASIDE_REASONS
    }
    tracker, state = restored(store, "target")
    assert state == "fresh"
    assert not tracker.baseline_done  # a fresh baseline: backlog recorded, not counted
    save(store, "target", tracker)  # and the new file works


def test_a_first_version_database_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / DATABASE_NAME
    tracker = RunTracker()
    tracker.complete_baseline(at=T0)
    tracker.observe(finished("t-1", T0 + 1), now=T0 + 1)
    changes = tracker.export_changes()
    assert changes.summary is not None
    with sqlite3.connect(path) as db:
        db.executescript(MIGRATIONS[0])
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute("PRAGMA user_version = 1")
        db.execute("INSERT INTO targets VALUES ('target', 'prod', ?)", (changes.summary,))
        db.executemany(
            "INSERT INTO entries VALUES ('target', ?, ?)",
            [(k, v) for k, v in changes.rows if v is not None],
        )
    store = StateStore(tmp_path)
    again, state = restored(store, "target")
    assert state == "restored"
    assert counted(again) == 1
    store.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_state_of_removed_targets_is_dropped_after_a_while(tmp_path: Path) -> None:
    now = [T0]
    store = StateStore(tmp_path, clock=lambda: now[0])
    for target_id in ("kept", "removed"):
        tracker = RunTracker()
        tracker.complete_baseline(at=T0)
        save(store, target_id, tracker)
    assert store.forget_others({"kept"}) == 0  # recently used: kept for a while
    now[0] += FORGET_AFTER_SECONDS + 1
    store.target("kept", "prod")  # still configured
    assert store.forget_others({"kept"}) == 1
    assert restored(store, "removed")[1] == "fresh"
    assert restored(store, "kept")[1] == "restored"


def test_unreadable_entries_keep_the_counters_and_take_a_new_baseline(tmp_path: Path) -> None:
    _saved_with_one_run(tmp_path)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE entries SET value = ?", (msgspec.msgpack.encode("garbled"),))
    again, state = restored(StateStore(tmp_path), "target")
    assert state == "restored"
    assert counted(again) == 1  # never lower than what was served
    assert not again.baseline_done  # what it remembered is gone: nothing is counted twice
    again.observe(finished("t-1", T0 + 1), now=T0 + 10)
    again.complete_baseline(at=T0 + 10)
    assert counted(again) == 1


def test_rows_saved_by_the_build_before_the_shared_run_states_take_a_new_baseline(
    tmp_path: Path,
) -> None:
    # That build (unreleased) saved a record's statuses, codes and Repeats as fields of their
    # own: such a row is unreadable now; the counters go on and nothing is counted twice.
    _saved_with_one_run(tmp_path)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        (value,) = db.execute("SELECT value FROM entries").fetchone()
        entry, ghost, runs = msgspec.msgpack.decode(value)
        record = entry["result"]
        record.update(record.pop("state"))  # the former, flat shape
        db.execute("UPDATE entries SET value = ?", (msgspec.msgpack.encode([entry, ghost, runs]),))
    again, state = restored(StateStore(tmp_path), "target")
    assert state == "restored"
    assert counted(again) == 1
    assert not again.baseline_done
    again.observe(finished("t-1", T0 + 1), now=T0 + 10)
    again.complete_baseline(at=T0 + 10)
    again.observe(finished("t-1", T0 + 1), now=T0 + 20)
    assert counted(again) == 1


def test_unreadable_entries_are_dropped_so_the_next_start_restores_the_new_baseline(
    tmp_path: Path,
) -> None:
    store = StateStore(tmp_path)
    tracker = RunTracker()
    tracker.complete_baseline(at=T0)
    for n in range(3):
        tracker.observe(finished(f"t-{n}", T0 + 1), now=T0 + 1)
    save(store, "target", tracker)
    store.close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE entries SET value = ?", (msgspec.msgpack.encode("garbled"),))
    store = StateStore(tmp_path)
    again, _ = restored(store, "target")
    again.observe(finished("t-new", T0 + 20), now=T0 + 20)  # t-0..t-2 are gone from the API
    again.complete_baseline(at=T0 + 20)
    save(store, "target", again)
    store.close()
    # The garbled rows of results no longer in view went with the new baseline's save: the
    # next start restores it instead of taking yet another one.
    third, state = restored(StateStore(tmp_path), "target")
    assert state == "restored"
    assert third.baseline_done
    assert counted(third) == 3


def _saved_with_one_run(directory: Path) -> RunTracker:
    """A state with one run counted (and one row), saved in ``directory``; the tracker."""
    store = StateStore(directory)
    tracker = RunTracker()
    tracker.complete_baseline(at=T0)
    tracker.observe(finished("t-1", T0 + 1), now=T0 + 1)
    save(store, "target", tracker)
    store.close()
    return tracker


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# SQLite keeps a value of any type in any column: a file edited by hand (or by another tool).
NOT_BLOBS = [123, "abc", 1.5, 0]


@pytest.mark.parametrize("value", NOT_BLOBS)
def test_counters_stored_as_something_else_than_a_blob_start_the_target_afresh(
    tmp_path: Path, value: object, caplog: pytest.LogCaptureFixture
) -> None:
    _saved_with_one_run(tmp_path)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE targets SET summary = ?", (value,))
    store = StateStore(tmp_path)
    again, state = restored(store, "target")  # crashed the exporter at start
    assert state == "fresh"
    assert not again.baseline_done
    assert counted(again) == 0
    assert _warnings(caplog) == ["stored state of a target unreadable: it starts afresh"]
    save(store, "target", again)  # and the target's state is written anew
    assert restored(store, "target")[1] == "restored"


@pytest.mark.parametrize("column", ["key", "value"])
@pytest.mark.parametrize("value", NOT_BLOBS)
def test_rows_stored_as_something_else_than_a_blob_keep_the_counters_and_take_a_new_baseline(
    tmp_path: Path, column: str, value: object, caplog: pytest.LogCaptureFixture
) -> None:
    _saved_with_one_run(tmp_path)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute(f"UPDATE entries SET {column} = ?", (value,))
    store = StateStore(tmp_path)
    again, state = restored(store, "target")  # crashed the exporter at start
    assert state == "restored"
    assert counted(again) == 1  # never lower than what was served
    assert not again.baseline_done  # what it remembered is gone: nothing is counted twice
    assert _warnings(caplog) == [
        "stored results of a target unreadable: its counters go on, a new baseline is taken"
    ]
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 0


def _with(summary: dict[str, object], field: str, value: object) -> dict[str, object]:
    """``summary`` with ``field`` (``name`` or ``name.index.index``) set to ``value``."""
    changed: dict[str, Any] = json.loads(json.dumps(summary))
    name, *path = field.split(".")
    if not path:
        changed[name] = value
        return changed
    holder = changed[name]
    for index in path[:-1]:
        holder = holder[int(index)]
    holder[int(path[-1])] = value
    return changed


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("dropped_bytes", -1),
        ("found_by_sweep", -5),
        ("dropped_bytes", 2**63),
        ("finished.0.2", 2**63),
        ("finished.0.2", -1),
        ("durations.0.1.0", -1),
        ("durations.0.2", float("nan")),
        ("durations.0.2", -1.0),
        ("durations.0.2", float("inf")),
        ("baseline_time", float("nan")),
        ("baseline_time", float("inf")),
        ("dropped_until", float("nan")),
        ("newest_baseline_time", float("inf")),
        ("tolerance", float("nan")),
        ("tolerance", -2.0),
        ("commands", [["c-1", "name", "Success", -1]]),
    ],
)
def test_counters_out_of_range_are_unreadable_and_the_target_starts_afresh(
    tmp_path: Path, field: str, value: object, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = _saved_with_one_run(tmp_path)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        (summary,) = db.execute("SELECT summary FROM targets").fetchone()
        saved = msgspec.msgpack.decode(summary)
        # Rewritten as is, the state restores: only the value changed makes it unreadable.
        db.execute("UPDATE targets SET summary = ?", (msgspec.msgpack.encode(saved),))
    store = StateStore(tmp_path)
    again, state = restored(store, "target")
    store.close()
    assert state == "restored"
    assert again.counter_totals() == tracker.counter_totals()
    assert not _warnings(caplog)

    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        changed = _with(saved, field, value)
        db.execute("UPDATE targets SET summary = ?", (msgspec.msgpack.encode(changed),))
    again, state = restored(StateStore(tmp_path), "target")
    assert state == "fresh"  # it was restored as it was, e.g. a negative counter
    assert counted(again) == 0
    assert not again.baseline_done
    assert _warnings(caplog) == ["stored state of a target unreadable: it starts afresh"]


def test_a_state_saved_before_the_first_baseline_restores(tmp_path: Path) -> None:
    """Times not known yet are saved as -inf: that is no out-of-range time."""
    store = StateStore(tmp_path)
    tracker = RunTracker()
    tracker.observe(finished("t-backlog", T0 - 100), now=T0)
    save(store, "target", tracker)
    store.close()
    again, state = restored(StateStore(tmp_path), "target")
    assert state == "restored"
    assert len(again) == 1
    assert not again.baseline_done


@pytest.mark.parametrize("last_used", ["yesterday", b"\x00"])
def test_a_last_use_that_is_not_a_time_lets_a_removed_target_be_dropped(
    tmp_path: Path, last_used: object
) -> None:
    store = StateStore(tmp_path)
    for target_id in ("kept", "removed"):
        tracker = RunTracker()
        tracker.complete_baseline(at=T0)
        save(store, target_id, tracker)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        db.execute("UPDATE targets SET last_used = ? WHERE target_id = 'removed'", (last_used,))
    assert store.forget_others({"kept"}) == 1  # a TEXT one crashed the start
    assert restored(store, "removed")[1] == "fresh"
    assert restored(store, "kept")[1] == "restored"


def test_target_identity_follows_account_region_endpoint_and_filters() -> None:
    base = target_identity("prod", "cn-hangzhou", None, InvocationQuery(), include_history=False)
    assert base == target_identity(
        "prod", "cn-hangzhou", None, InvocationQuery(), include_history=False
    )
    others = {
        target_identity("dev", "cn-hangzhou", None, InvocationQuery(), include_history=False),
        target_identity("prod", "cn-beijing", None, InvocationQuery(), include_history=False),
        target_identity(
            "prod", "cn-hangzhou", "https://x", InvocationQuery(), include_history=False
        ),
        target_identity(
            "prod", "cn-hangzhou", None, InvocationQuery(command_id="c-1"), include_history=False
        ),
        target_identity("prod", "cn-hangzhou", None, InvocationQuery(), include_history=True),
    }
    assert base not in others
    assert len(others) == 5


def _stored_refresher(
    api: FakeApi, executor: ThreadPoolExecutor, now: list[float], store: StateStore
) -> TargetRefresher:
    """A refresher of ``prod`` saving to ``store``, due at every refresh, on clock ``now[0]``."""
    return make_refresher(
        api,
        executor,
        lambda: now[0],
        store=store.target("target", "prod"),
        min_refresh_interval=0,
        sweep_interval=0,
    )


def test_the_refresher_serves_restored_counters_before_its_first_refresh(
    tmp_path: Path,
) -> None:
    api = FakeApi()
    now = [T0]
    with ThreadPoolExecutor(1) as executor:
        store = StateStore(tmp_path)
        first = _stored_refresher(api, executor, now, store)
        first.refresh_now()  # baseline
        api.records.insert(0, result("t-1", "i-1", "Success", start=T0, finished=T0 + 5))
        now[0] += 10
        served = first.refresh_now().counters
        store.close()

        store = StateStore(tmp_path)
        api.records.insert(
            0, result("t-2", "i-1", "Failed", start=T0 + 10, finished=T0 + 15)
        )  # while down
        second = _stored_refresher(api, executor, now, store)
        snapshot = second.latest()
        assert snapshot.state == "restored"
        assert snapshot.counters == served
        now[0] += 10
        after = second.refresh_now()
        finished_runs = {label: n for label, n in after.counters.finished if n}
        assert sum(finished_runs.values()) == 2  # t-1 once, t-2 (finished while down) once
        store.close()


def test_a_restart_with_another_accounts_credentials_counts_none_of_its_backlog(
    tmp_path: Path,
) -> None:
    # Restarted with another AccessKey (maybe another account): what the target reads now is
    # judged from its last read on, not against the first walk of the results it read before.
    api = FakeApi([result("a-1", "i-1", "Success", start=T0 - 100)])
    now = [T0]
    with ThreadPoolExecutor(1) as executor:
        store = StateStore(tmp_path)
        first = _stored_refresher(api, executor, now, store)
        first.use_credentials("account-a")
        first.refresh_now()  # baseline
        now[0] += 300
        api.records.insert(0, result("a-2", "i-1", "Success", start=now[0] - 20))
        # The last read as account A (a steady one would save no time): a-2 is counted.
        before = sum(n for _, n in first.refresh_now().counters.finished)
        assert before == 1
        store.close()

        # Account B's results: some ended after A's baseline, all before the last read.
        api.records = [
            result(f"b-{n}", "i-2", "Success", start=T0 + 10 * n, finished=T0 + 10 * n + 5)
            for n in range(20)
        ]
        store = StateStore(tmp_path)
        second = _stored_refresher(api, executor, now, store)
        second.use_credentials("account-b")
        assert second.latest().state == "restored"
        now[0] += 30
        assert sum(n for _, n in second.refresh_now().counters.finished) == before
        api.records.insert(0, result("b-new", "i-2", "Failed", start=now[0], finished=now[0] + 5))
        now[0] += 30
        assert sum(n for _, n in second.refresh_now().counters.finished) == before + 1
        store.close()

        # Restarted again as B: nothing is judged afresh, nothing counted twice.
        store = StateStore(tmp_path)
        third = _stored_refresher(api, executor, now, store)
        third.use_credentials("account-b")
        now[0] += 30
        assert sum(n for _, n in third.refresh_now().counters.finished) == before + 1
        store.close()


def test_entries_share_what_they_have_in_common_live_and_after_a_restart(
    tmp_path: Path,
) -> None:
    # A tracker holds one entry per result for 30 days: the extras most results first read after
    # the baseline have, their run states, and the key tuple of a result read again changed,
    # are not copied for each of them, before a restart or after.
    api = FakeApi(backlog(50))
    now = [T0]
    with ThreadPoolExecutor(1) as executor:
        store = StateStore(tmp_path)
        refresher = _stored_refresher(api, executor, now, store)
        refresher.refresh_now()  # baseline
        for n in range(40):
            now[0] += 30
            tags = (("team", "ops"),) if n % 4 == 0 else ()
            if n % 2:  # read running first, then finished
                api.records.insert(0, result(f"n-{n}", "i-1", "Running", start=now[0] - 5))
                refresher.refresh_now()
                now[0] += 30
                api.set(result(f"n-{n}", "i-1", start=now[0] - 35))
            else:
                api.records.insert(0, result(f"n-{n}", "i-1", start=now[0] - 5).replace(tags=tags))
            refresher.refresh_now()
        live = refresher._tracker.view
        new = {key: entry for key, entry in live.items() if key[0].startswith("n-")}
        assert len(new) == 40
        assert len({id(entry.extras) for entry in new.values()}) == 1  # all watched from run 1
        assert all(entry.watched_run == 1 for entry in new.values())
        assert all(key is entry.result.key for key, entry in new.items())
        states = {id(entry.result.state) for entry in new.values()}
        assert len(states) == 1  # all Success, exit code 0, one run
        # An entry with more than that has its own copy: the shared one stays as it was.
        entry = new[("n-1", "i-1", "")]
        entry.oss_counted_run = 1
        assert entry.extras is not new[("n-3", "i-1", "")].extras
        assert new[("n-3", "i-1", "")].oss_counted_run == 0
        assert entry.watched_run == 1
        entry.oss_counted_run = 0
        store.close()

        store = StateStore(tmp_path)
        again = _stored_refresher(api, executor, now, store)
        restored = {k: e for k, e in again._tracker.view.items() if k[0].startswith("n-")}
        # (What a steady refresh read again, its time of reading, is not saved.)
        assert {k: (e.result, e.extras) for k, e in restored.items()} == {
            k: (e.result, e.extras) for k, e in new.items()
        }
        assert len({id(entry.extras) for entry in restored.values()}) <= 2
        assert all(key is entry.result.key for key, entry in restored.items())
        assert {id(entry.result.state) for entry in restored.values()} == states
        tagged = [entry.result.extras for entry in restored.values() if entry.result.tags]
        assert len(tagged) == 10
        assert len({id(extras) for extras in tagged}) == 1
        store.close()


def _config_file(directory: Path) -> Path:
    """A config file with one static-key target, as the CLI tests start the exporter with."""
    config = directory / "config.yml"
    config.write_text(
        "targets:\n- name: prod\n  region_id: cn-hangzhou\n  credentials:\n"
        "    source: static\n    access_key_id: LTAI5tStateTest\n"
        "    access_key_secret: state-secret-1234\n",
        encoding="utf-8",
    )
    return config


def test_an_unwritable_state_directory_stops_the_start_with_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x", encoding="utf-8")
    config = _config_file(tmp_path)
    outcome = run_cli(["--config.file", str(config), f"--storage.path={blocker}/state"])
    assert outcome.code == 2
    lines = outcome.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("aliyun-cloudassistant-exporter: error: --storage.path: ")
    assert "Traceback" not in outcome.stderr


def test_a_second_exporter_on_the_same_directory_refuses_to_start(tmp_path: Path) -> None:
    config = _config_file(tmp_path)
    store = StateStore(tmp_path / "state")  # as a running exporter holds it
    try:
        outcome = run_cli(["--config.file", str(config), f"--storage.path={tmp_path}/state"])
    finally:
        store.close()
    assert outcome.code == 2
    assert "--storage.path:" in outcome.stderr
    assert "in use by another exporter" in outcome.stderr


def test_what_the_retention_forgets_after_a_restart_leaves_the_database(tmp_path: Path) -> None:
    # Rows saved before a restart, then forgotten (view, ghost and history run alike).
    store = StateStore(tmp_path)
    tracker = RunTracker(include_history=True)
    tracker.complete_baseline(at=T0)
    tracker.observe(finished("t-1", T0 + 10), now=T0 + 10)
    tracker.observe(finished("t-2", T0 + 10), now=T0 + 10)
    tracker.evict_keys([("t-2", "i-1", "")])
    periodic = result("t-p", "i-2", "Success", repeats=3, start=T0 + 20, finished=T0 + 25)
    assert tracker.observe_history_run(periodic, now=T0 + 30)
    save(store, "target", tracker)
    store.close()

    store = StateStore(tmp_path)
    again = RunTracker(include_history=True)
    store.target("target", "prod").restore_into(again)
    tracked = len(again)
    assert tracked == len(tracker)
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 3  # one per result
    # 31 days on, by the host's clock and the API's (a record of then shows it).
    again.observe(finished("t-later", T0 + 31 * 86400), now=T0 + 31 * 86400)
    assert again.expire(T0 + 31 * 86400) == tracked + 1  # and the ghost
    save(store, "target", again)
    store.close()
    with sqlite3.connect(tmp_path / DATABASE_NAME) as db:
        assert db.execute("SELECT count(*) FROM entries").fetchone()[0] == 1  # t-later's


def test_results_that_left_the_view_and_history_runs_survive_a_restart(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    plain = RunTracker()
    plain.complete_baseline(at=T0)
    plain.observe(finished("t-1", T0 + 10), now=T0 + 10)
    plain.evict_keys([("t-1", "i-1", "")])  # the API missed it once
    save(store, "plain", plain)
    history = RunTracker(include_history=True)
    history.complete_baseline(at=T0)
    periodic = result("t-p", "i-1", "Success", repeats=3, start=T0 + 20, finished=T0 + 25)
    assert history.observe_history_run(periodic, now=T0 + 30)
    save(store, "history", history)
    store.close()

    store = StateStore(tmp_path)
    again, _ = restored(store, "plain")
    again.observe(finished("t-1", T0 + 10), now=T0 + 40)  # back in the view: not again
    assert counted(again) == 1
    again_history = RunTracker(include_history=True)
    store.target("history", "prod").restore_into(again_history)
    assert not again_history.observe_history_run(periodic, now=T0 + 40)  # the same run
    assert counted(again_history) == 1


@contextlib.contextmanager
def _baselined(
    tmp_path: Path,
) -> Iterator[tuple[FakeApi, list[float], StateStore, TargetRefresher]]:
    """An empty API, a clock, a store in ``tmp_path`` and a refresher of ``prod`` saving to it,
    whose baseline was taken (and saved)."""
    api = FakeApi()
    now = [T0]
    store = StateStore(tmp_path)
    with ThreadPoolExecutor(1) as executor:
        refresher = _stored_refresher(api, executor, now, store)
        refresher.refresh_now()
        yield api, now, store, refresher


def test_a_refresh_whose_state_cannot_be_saved_is_not_served(tmp_path: Path) -> None:
    with _baselined(tmp_path) as (api, now, store, refresher):
        store.close()  # the disk goes away: saves fail from now on
        api.records.insert(0, result("t-1", "i-1", "Failed", start=T0, finished=T0 + 5))
        now[0] += 10
        snapshot = refresher.refresh_now()
        # Served, it could be taken back by a restart: the counters stay as saved, marked down.
        assert not snapshot.up
        assert snapshot.last_failure_reason == "internal"
        assert sum(n for _, n in snapshot.counters.finished) == 0


def test_the_landing_page_says_which_counters_were_restored() -> None:
    statuses = [
        TargetStatus("prod", "cn-hangzhou", True, T0, "", state="restored"),
        TargetStatus("dev", "cn-hangzhou", True, T0, ""),
    ]
    page = render_landing_page("/metrics", statuses)
    prod, dev = (line for line in page.splitlines() if line.startswith("<tr><td>"))
    assert "counters restored" in prod
    assert "counters restored" not in dev


def test_a_path_no_file_system_takes_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="not a usable path"):
        StateStore(tmp_path / "bad\0name")


def test_state_of_a_target_another_shard_owns_is_dropped_at_once(tmp_path: Path) -> None:
    """A target that moved to another shard is counted there: were its state kept here and the
    target came back (3 shards, then 4, then 3 again), the runs the other shard counted in
    between would be counted again."""
    store = StateStore(tmp_path, clock=lambda: T0)
    for target_id in ("mine", "moved", "removed"):
        tracker = RunTracker()
        tracker.complete_baseline(at=T0)
        save(store, target_id, tracker)
    assert store.forget_others({"mine"}, owned_elsewhere={"moved"}) == 1
    assert restored(store, "moved")[1] == "fresh"
    assert restored(store, "removed")[1] == "restored"  # not configured: kept for a while
    assert restored(store, "mine")[1] == "restored"


def test_the_largest_integers_an_answer_may_carry_are_saved_and_restored(tmp_path: Path) -> None:
    """An answer's integers are kept within 64 bits (beyond, as absent), and a sum of them
    saturates: whatever the API sends, the state can be saved (it could not, and the target
    stopped counting for good)."""
    stamp = datetime.fromtimestamp(T0 + 5, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    records = [
        {
            "InvokeId": f"t-{n}",
            "InstanceId": "i-1",
            "InvocationStatus": "Failed",
            "InvokeRecordStatus": "Finished",
            "StartTime": stamp,
            "FinishedTime": stamp,
            **fields,
        }
        for n, fields in enumerate(
            [
                {"ExitCode": 10**20, "Dropped": 2**63 - 1},
                {"ExitCode": -(2**63), "Dropped": 2**63 - 1, "Repeats": 10**30},
                {"ExitCode": 2**64 - 1, "Dropped": 2**64 - 1},
            ]
        )
    ]
    body = {"RequestId": "R", "Invocation": {"InvocationResults": {"InvocationResult": records}}}
    store = StateStore(tmp_path)
    tracker = RunTracker()
    tracker.complete_baseline(at=T0)
    for record in parse_page(json.dumps(body).encode()).results:
        tracker.observe(record, now=T0 + 10)
    save(store, "target", tracker)
    totals = tracker.counter_totals()
    assert counted(tracker) == 3
    assert totals.dropped_bytes == 2**63 - 1
    store.close()

    store = StateStore(tmp_path)
    again, state = restored(store, "target")
    assert state == "restored"
    assert again.counter_totals() == totals
    store.close()


def test_only_the_newest_store_of_a_target_writes_its_state(tmp_path: Path) -> None:
    """A target removed and added back (two reloads) gets a new store: the removed refresher's
    store, whatever it still has to save, writes nothing over what the new one restored."""
    store = StateStore(tmp_path)
    old = store.target("target", "prod")
    tracker = RunTracker()
    tracker.complete_baseline(at=T0)
    tracker.observe(finished("t-1", T0 + 10), now=T0 + 10)
    changes = tracker.export_changes()
    assert old.save(changes)
    tracker.changes_saved(changes)

    new = store.target("target", "prod")  # the target added back
    again = RunTracker()
    new.restore_into(again)
    tracker.observe(finished("t-2", T0 + 20), now=T0 + 20)  # what only the old one read
    assert old.retired
    assert not old.save(tracker.export_changes())
    assert not old.save(RunTracker().export_changes())  # nothing to write: still refused
    again.observe(finished("t-3", T0 + 30, "Failed"), now=T0 + 30)
    assert not new.retired
    assert new.save(again.export_changes())
    store.close()

    store = StateStore(tmp_path)
    after, _ = restored(store, "target")
    assert dict(after.counter_totals().finished) == dict(again.counter_totals().finished)
    assert counted(after) == 2  # t-1 and t-3
    store.close()


def test_a_retired_store_writes_nothing_and_leaves_a_newer_one_writing(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    removed = store.target("target", "prod")
    removed.retire()  # a reload removed the target
    tracker = RunTracker()
    tracker.complete_baseline(at=T0)
    assert not removed.save(tracker.export_changes())
    assert restored(store, "target")[1] == "fresh"  # nothing was written

    added = store.target("target", "prod")  # a later reload adds it back
    removed.retire()  # again: the new owner keeps its right to write
    assert added.save(tracker.export_changes())
    assert restored(store, "target")[1] == "restored"
    store.close()


def test_a_retired_refresher_neither_saves_nor_publishes_what_it_read(tmp_path: Path) -> None:
    with _baselined(tmp_path) as (api, now, store, refresher):
        before = refresher.latest()
        refresher.retire()
        assert refresher.start_if_due() is None
        api.records.insert(0, result("t-1", "i-1", "Failed", start=T0, finished=T0 + 5))
        now[0] += 10
        # Its last refresh (one in flight at the reload does the same): not an error, not shown.
        assert refresher.refresh_now() is before
        assert restored(store, "target")[0].counter_totals() == before.counters
    store.close()


def test_a_target_added_back_during_a_save_restores_that_save_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reload that adds a target back comes while the removed refresher's save is half
    written (its summary, not all its rows): the new store restores the save whole, once it is
    committed, and the old store writes nothing after it."""
    store = StateStore(tmp_path)
    old = store.target("target", "prod")
    tracker = RunTracker()
    tracker.complete_baseline(at=T0)
    for n in range(3):
        tracker.observe(finished(f"t-{n}", T0 + 10), now=T0 + 10)
    writing, release = threading.Event(), threading.Event()
    encode_rows = EncodedRows.__iter__

    def held_rows(rows: EncodedRows) -> Iterator[tuple[bytes, bytes | None]]:
        for number, row in enumerate(encode_rows(rows)):
            if number == 1:  # in the transaction, a row written, two to go
                writing.set()
                release.wait(10)
            yield row

    monkeypatch.setattr(EncodedRows, "__iter__", held_rows)
    saves = ThreadPoolExecutor(2)
    saved = saves.submit(old.save, tracker.export_changes())
    assert writing.wait(10)
    again = RunTracker()

    def add_back() -> str:
        return store.target("target", "prod").restore_into(again).state

    added_back = saves.submit(add_back)
    release.set()
    assert saved.result(10)  # begun before the target was added back: committed
    assert added_back.result(10) == "restored"
    saves.shutdown()
    monkeypatch.undo()
    assert len(again) == 3
    assert counted(again) == 3
    tracker.observe(finished("t-late", T0 + 20), now=T0 + 20)
    assert not old.save(tracker.export_changes())
    store.close()
