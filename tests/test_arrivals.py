"""The order a view takes results in: numbers every target shares, kept small over time."""

from __future__ import annotations

import pytest

from exporter import arrivals, viewqueries
from exporter.arrivals import MAX_SHARED, SPARSE_SLACK, ArrivalNumbers, number
from exporter.tracking import RunTracker
from exporter.viewentry import ViewEntry
from tests.support.fakes import T0, result


def test_a_number_is_one_object_in_the_process_below_the_bound() -> None:
    for n in (0, 257, 5_000, MAX_SHARED - 1):
        assert number(n) == n
        assert number(n) is number(int(str(n)))  # a number made elsewhere: the same object
    assert number(MAX_SHARED) == MAX_SHARED
    assert number(MAX_SHARED + 7) == MAX_SHARED + 7
    assert number(-5) == -5  # (a tampered saved state) not taken for a place in the table


def test_targets_share_the_numbers_of_the_results_they_take_in() -> None:
    # 300 targets of 1,000 results: without sharing, 744 int objects of 32 bytes per target.
    pages = [
        [result(f"t-{n:04d}", start=T0 - n) for n in range(p, p + 50)] for p in range(0, 1000, 50)
    ]
    first, second = RunTracker(), RunTracker()
    for page in pages:
        first.observe_backlog(page, now=T0)
    for page in reversed(pages):  # another target, its own results in another order
        second.observe_backlog(page, now=T0)
    ones = sorted(entry.arrival for entry in first.view.values())
    others = sorted(entry.arrival for entry in second.view.values())
    assert ones == list(range(1, 1001))
    assert all(one is other for one, other in zip(ones, others, strict=True))


def _entries(count: int) -> list[ViewEntry]:
    return [
        ViewEntry(result(f"t-{n}"), T0, arrival=number(n + 1) if n else 0) for n in range(count)
    ]


def test_compacting_keeps_the_order_and_leaves_results_without_a_number_alone() -> None:
    numbers = ArrivalNumbers()
    entries = _entries(10)  # the first: restored from a state without numbers (0)
    numbers.restored(entries)
    assert (numbers.taken, numbers.last) == (10, 10)
    assert not numbers.compact(entries)  # dense: nothing to do
    # Most results left while many came in: the numbers ran far ahead of what is held.
    kept = [entries[0], *entries[3:6]]
    for _ in range(2 * SPARSE_SLACK):
        kept.append(ViewEntry(result("t-new"), T0, arrival=numbers.next()))
    kept = kept[:4] + kept[-3:]
    order = [id(entry) for entry in sorted(kept[1:], key=lambda entry: entry.arrival)]
    assert numbers.compact(kept)
    assert [entry.arrival for entry in kept] == [0, 1, 2, 3, 4, 5, 6]
    assert [id(entry) for entry in sorted(kept[1:], key=lambda entry: entry.arrival)] == order
    assert numbers.last == 6
    assert numbers.taken == 10 + 2 * SPARSE_SLACK  # what the refresh plan counts never goes down
    assert numbers.next() == 7


def test_a_long_lived_target_keeps_its_numbers_small_and_its_order_across_a_restart() -> None:
    # A target whose results come and go for ever (the size cap drops the oldest here, the
    # retention does in a deployment): its numbers stay within what every target shares.
    tracker = RunTracker(tracking_cap=200)
    tracker.complete_baseline(at=T0)
    now = T0
    for batch in range(60):
        now += 60
        for n in range(50):
            tracker.observe(result(f"t-{batch}-{n}", start=now - 30), now=now)
        tracker.expire(now)
        held = len(tracker.view)
        assert tracker.last_arrival <= 2 * held + SPARSE_SLACK
        assert max(entry.arrival for entry in tracker.view.values()) == tracker.last_arrival
    assert tracker.arrivals == 3000
    assert tracker.last_arrival < 1000  # renumbered (twice), with the same order
    order = sorted(tracker.view, key=lambda key: viewqueries.read_order(tracker.view, key) or ())
    assert len(order) == 200
    # Newest-first by when they were taken in: the last batch first.
    assert order[-1][0] == "t-59-0"

    changes = tracker.export_changes()
    assert changes.summary is not None
    restored = RunTracker(tracking_cap=200)
    restored.restore(changes.summary, [(k, v) for k, v in changes.rows if v is not None])
    again = sorted(restored.view, key=lambda key: viewqueries.read_order(restored.view, key) or ())
    assert again == order
    assert restored.last_arrival == tracker.last_arrival


def test_numbers_past_the_shared_ones_are_right_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(arrivals, "MAX_SHARED", 300)
    monkeypatch.setattr(arrivals, "_table", list(range(257)))
    tracker = RunTracker()
    for p in range(0, 1000, 50):  # a page at a time, across the bound
        tracker.observe_backlog([result(f"t-{n:04d}") for n in range(p, p + 50)], now=T0)
    assert [entry.arrival for entry in tracker.view.values()] == list(range(1, 1001))
    assert len(arrivals._table) == 300
    assert tracker.view[("t-0280", "i-1", "")].arrival is arrivals._table[281]
    assert tracker.arrivals == tracker.last_arrival == 1000


def test_restored_numbers_are_the_shared_objects_too() -> None:
    # A target that rarely renumbers (few of its results leave) keeps the numbers it restored
    # for weeks: they are shared like those given live.
    tracker = RunTracker()
    tracker.observe_backlog([result(f"t-{n:04d}") for n in range(1000)], now=T0)
    tracker.complete_baseline(at=T0)
    changes = tracker.export_changes()
    assert changes.summary is not None
    restored = RunTracker()
    restored.restore(changes.summary, [(k, v) for k, v in changes.rows if v is not None])
    numbers = [entry.arrival for entry in restored.view.values()]
    assert sorted(numbers) == list(range(1, 1001))
    assert all(n is number(n) for n in numbers)
    assert restored.last_arrival == restored.arrivals == 1000
