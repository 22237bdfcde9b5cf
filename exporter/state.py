"""Durable state: what each target's tracker needs to count exactly once across restarts.

The state directory (``--storage.path``) holds ``state.db``, an SQLite database in WAL mode, and
``lock``, locked (``flock``) by the process using the directory, so two exporters never share
one. Per target, identified by :func:`target_identity` (account, region, endpoint, filters):

* ``targets``: the counters and scalars of its tracker (one msgpack value, rewritten when any
  of them changed), its label for people, and when it was last used;
* ``entries``: one row per result the tracker remembers (its view entry and the runs of it that
  were counted), written only when it changed: a refresh with nothing new writes nothing.

Persist, then publish: the refresher saves a refresh's changes in one transaction
(:meth:`TargetStore.save`, ``synchronous=FULL``) before it hands the new snapshot to scrapes,
so whatever a scrape saw is on disk, and a crash at any moment restarts from a state that
Prometheus either saw or did not: a counter never goes down and no run is counted twice.

One writer per target: the newest :class:`TargetStore` handed out for a target owns its state,
and a store that no longer does (its refresher was removed by a reload, the target perhaps added
back meanwhile, with a new refresher that restored the state) writes nothing. A removed target's
refresh still in flight then leaves the state as the new refresher restored it: it neither
overwrites what the new one counted since nor leaves rows the new one does not know it has.

Bad state is never fatal: a file that is not an SQLite database, is corrupt or truncated (its
tables not those this version writes included), belongs to another program or has a newer
schema is moved aside (``state.db.<reason>-<time>``) with a warning, counted in
:attr:`StateStore.moved_aside`, and a fresh database replaces it (every target then takes a new
baseline: counting nothing twice). Within a sound file, a target whose counters cannot be read
(of another type than a BLOB, not of the saved shape, out of range) starts afresh; one whose
rows cannot be read keeps its counters and takes a new baseline (one warning either way). A
directory that cannot be created, locked or written raises :class:`StateError` at start.

Schema: ``PRAGMA user_version`` is the version, ``PRAGMA application_id`` tells our files from
others; :data:`MIGRATIONS` take any older version to the current one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from exporter import metrics
from exporter.ecs.models import InvocationQuery
from exporter.trackerstate import TrackerChanges
from exporter.tracking import RunTracker

APPLICATION_ID: Final = 0x41434145  # "ACAE": an aliyun-cloudassistant-exporter state file
DATABASE_NAME: Final = "state.db"
LOCK_NAME: Final = "lock"
FORGET_AFTER_SECONDS: Final = 7 * 86400.0
"""The state of a target no longer configured is dropped once unused for this long."""
MOVED_ASIDE_REASONS: Final = metrics.STATE_MOVE_REASONS

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the first schema.
    """
    CREATE TABLE targets (
        target_id TEXT PRIMARY KEY,
        label TEXT NOT NULL,
        summary BLOB NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE entries (
        target_id TEXT NOT NULL,
        key BLOB NOT NULL,
        value BLOB NOT NULL,
        PRIMARY KEY (target_id, key)
    ) WITHOUT ROWID;
    """,
    # 2: when each target was last used, to drop the state of removed targets.
    "ALTER TABLE targets ADD COLUMN last_used REAL NOT NULL DEFAULT 0;",
)
SCHEMA_VERSION: Final = len(MIGRATIONS)

_SQLITE_HEADER = b"SQLite format 3\x00"

log = logging.getLogger(__name__)


class StateError(Exception):
    """The state directory cannot be used; ``str()`` is the one-line reason."""


class _BadFile(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def target_identity(
    account: str,
    region_id: str,
    endpoint: str | None,
    query: InvocationQuery,
    *,
    include_history: bool,
) -> str:
    """A stable digest of what a target reads: a target whose identity changed starts afresh.

    Only filters that are set take part, so a filter added in a later version (unset) keeps
    every existing identity.
    """
    filters = {
        name: value
        for name, value in dataclasses.asdict(query).items()
        if value not in (None, (), [], False, "")
    }
    identity = {
        "account": account,
        "region": region_id,
        "endpoint": endpoint or "",
        "filters": filters,
        "include_history": include_history,
    }
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Restored:
    """What :meth:`TargetStore.restore_into` found: ``state`` is ``"restored"`` or
    ``"fresh"``; ``results`` how many results the tracker got back."""

    state: str
    results: int = 0


class StateStore:
    """The state directory, locked for this process (see the module docstring).

    Thread-safe: each target's refresh saves from its own worker thread; writes are serialised.
    """

    def __init__(self, directory: Path, clock: Callable[[], float] = time.time) -> None:
        """Open (create, lock, check) ``directory``; raises :class:`StateError`."""
        self.directory = directory
        self._clock = clock
        self._lock = threading.Lock()
        # Each target's owner: the one store that may write its state (see TargetStore.retire).
        self._owners: dict[str, TargetStore] = {}
        self.moved_aside: dict[str, int] = dict.fromkeys(MOVED_ASIDE_REASONS, 0)
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise StateError(f"{directory} is not a directory") from None
        except OSError as exc:
            raise StateError(f"cannot create {directory}: {exc.strerror or exc}") from None
        except ValueError:  # a NUL byte: no file system takes it
            raise StateError(f"{str(directory)!r} is not a usable path") from None
        self._lock_file = _lock_directory(directory)
        try:
            self._db = self._open_database()
        except BaseException:
            self._lock_file.close()
            raise

    # --- opening ---------------------------------------------------------------------------

    def _open_database(self) -> sqlite3.Connection:
        path = self.directory / DATABASE_NAME
        try:
            return _connect(path)
        except _BadFile as bad:
            self._move_aside(path, bad)
        except sqlite3.DatabaseError as exc:
            if _is_unwritable(exc):
                raise StateError(f"cannot write {path}: {exc}") from None
            self._move_aside(path, _BadFile("corrupt", str(exc)))
        try:
            return _connect(path)
        except (_BadFile, sqlite3.DatabaseError) as exc:
            raise StateError(f"cannot create {path}: {exc}") from None

    def _move_aside(self, path: Path, bad: _BadFile) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self._clock()))
        aside = path.with_name(f"{path.name}.{bad.reason}-{stamp}")
        try:
            path.replace(aside)
            for suffix in ("-wal", "-shm"):
                companion = path.with_name(path.name + suffix)
                if companion.exists():
                    companion.replace(aside.with_name(aside.name + suffix))
        except OSError as exc:
            raise StateError(f"cannot move the unusable {path} aside: {exc.strerror}") from None
        self.moved_aside[bad.reason] = self.moved_aside.get(bad.reason, 0) + 1
        log.warning(
            "state file unusable, moved aside: every target starts with a fresh baseline",
            extra={"reason": bad.reason, "detail": str(bad), "moved_to": str(aside)},
        )

    # --- targets ---------------------------------------------------------------------------

    def target(self, target_id: str, label: str) -> TargetStore:
        """The state of one target (marked as used now, if the file can be written), owned by
        the store returned: any store handed out earlier for ``target_id`` writes nothing from
        now on. A save of one in progress (one transaction) ends first."""
        store = TargetStore(self, target_id, label)
        with self._lock:
            self._owners[target_id] = store
            try:
                with self._db:
                    self._db.execute(
                        "UPDATE targets SET last_used = ? WHERE target_id = ?",
                        (self._clock(), target_id),
                    )
            except sqlite3.Error as exc:  # the refreshes' saves will say it again, per target
                log.warning("cannot write the state file", extra={"detail": str(exc)})
        return store

    def _owns(self, store: TargetStore) -> bool:
        # Called with self._lock held, or for a hint only.
        return self._owners.get(store.target_id) is store

    def _retire(self, store: TargetStore) -> None:
        with self._lock:  # after a save in progress
            if self._owns(store):
                del self._owners[store.target_id]

    def forget_others(self, keep: set[str], owned_elsewhere: Set[str] = frozenset()) -> int:
        """Drop the state of targets not in ``keep`` that were not used for
        :data:`FORGET_AFTER_SECONDS`, and at once that of targets ``owned_elsewhere`` (another
        shard counts them now: if one came back here later, what it remembered would count
        again what that shard counted); vacuum when much of the file is free. Returns how
        many."""
        try:
            return self._forget_others(keep, owned_elsewhere)
        except sqlite3.Error as exc:  # housekeeping: it is tried again at the next start
            log.warning("cannot clean up the state file", extra={"detail": str(exc)})
            return 0

    def _forget_others(self, keep: set[str], owned_elsewhere: Set[str]) -> int:
        horizon = self._clock() - FORGET_AFTER_SECONDS
        with self._lock:
            with self._db:
                stale = [
                    target_id
                    for target_id, last_used in self._db.execute(
                        "SELECT target_id, last_used FROM targets"
                    )
                    if target_id not in keep
                    and (_unused_since(last_used, horizon) or target_id in owned_elsewhere)
                ]
                for target_id in stale:
                    self._db.execute("DELETE FROM entries WHERE target_id = ?", (target_id,))
                    self._db.execute("DELETE FROM targets WHERE target_id = ?", (target_id,))
            pages = self._db.execute("PRAGMA page_count").fetchone()[0]
            free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
            if free * 4 > pages and pages > 256:
                self._db.execute("VACUUM")
        return len(stale)

    def _load(self, target_id: str) -> tuple[bytes, list[tuple[bytes, bytes]]] | None:
        # The values come as stored, whatever their type (the decoders check it): an INTEGER
        # converted to bytes would be that many zero bytes, a TEXT or REAL no bytes at all.
        with self._lock:
            row = self._db.execute(
                "SELECT summary FROM targets WHERE target_id = ?", (target_id,)
            ).fetchone()
            if row is None:
                return None
            rows = self._db.execute(
                "SELECT key, value FROM entries WHERE target_id = ?", (target_id,)
            ).fetchall()
        summary: bytes = row[0]
        return summary, rows

    def _save(self, store: TargetStore, changes: TrackerChanges) -> bool:
        target_id = store.target_id
        with self._lock, self._db:
            if not self._owns(store):
                return False
            if changes.summary is not None:
                self._db.execute(
                    "INSERT INTO targets (target_id, label, summary, last_used) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (target_id) DO UPDATE SET label = excluded.label,"
                    " summary = excluded.summary, last_used = excluded.last_used",
                    (target_id, store.label, changes.summary, self._clock()),
                )
            deletes: list[tuple[str, bytes]] = []

            def upserts() -> Iterator[tuple[str, bytes, bytes]]:
                # One pass: the rows are encoded as they are read (see EncodedRows).
                for key, value in changes.rows:
                    if value is None:
                        deletes.append((target_id, key))
                    else:
                        yield target_id, key, value

            self._db.executemany(
                "INSERT OR REPLACE INTO entries (target_id, key, value) VALUES (?, ?, ?)",
                upserts(),
            )
            if deletes:
                self._db.executemany("DELETE FROM entries WHERE target_id = ? AND key = ?", deletes)
        return True

    def _drop_rows(self, store: TargetStore) -> None:
        with self._lock, self._db:
            if self._owns(store):
                self._db.execute("DELETE FROM entries WHERE target_id = ?", (store.target_id,))

    def _drop(self, store: TargetStore) -> None:
        with self._lock, self._db:
            if self._owns(store):
                self._db.execute("DELETE FROM entries WHERE target_id = ?", (store.target_id,))
                self._db.execute("DELETE FROM targets WHERE target_id = ?", (store.target_id,))

    def close(self) -> None:
        """Close the database and release the directory's lock."""
        with self._lock:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._lock_file.close()


def _unused_since(last_used: object, horizon: float) -> bool:
    # A last use that is not a number (SQLite keeps any type in any column: a file edited by
    # hand) or NaN tells nothing: as good as none.
    return not (isinstance(last_used, int | float) and last_used >= horizon)


class StateCollector(Collector):
    """``aliyun_cloudassistant_exporter_state_files_moved_aside_total{reason}``: state files
    this process found unusable and moved aside at start (every reason present, 0 if none)."""

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        spec = metrics.STATE_FILES_MOVED_ASIDE
        family = CounterMetricFamily(spec.family, spec.help, labels=list(spec.labels))
        for reason, count in self._store.moved_aside.items():
            family.add_metric([reason], count)
        yield family


class TargetStore:
    """One target's state in a :class:`StateStore`: the newest store handed out for a target
    writes it, an older one nothing (see :attr:`retired`)."""

    def __init__(self, store: StateStore, target_id: str, label: str) -> None:
        self._store = store
        self.target_id = target_id
        self.label = label

    def restore_into(self, tracker: RunTracker) -> Restored:
        """Give a fresh ``tracker`` the stored state, if any (an unreadable one is dropped with
        a warning: the target starts afresh)."""
        try:
            stored = self._store._load(self.target_id)
        except sqlite3.Error as exc:
            log.warning(
                "cannot read the stored state of a target: it starts afresh",
                extra={"target": self.label, "detail": str(exc)},
            )
            return Restored("fresh")
        if stored is None:
            return Restored("fresh")
        summary, rows = stored
        try:
            results = tracker.restore(summary, rows)
        except ValueError as exc:
            log.warning(
                "stored state of a target unreadable: it starts afresh",
                extra={"target": self.label, "detail": str(exc)},
            )
            self._store._drop(self)
            return Restored("fresh")
        if results is None:
            # Kept, they would be unreadable at every start: every start a new baseline.
            log.warning(
                "stored results of a target unreadable: its counters go on, a new baseline "
                "is taken",
                extra={"target": self.label},
            )
            self._store._drop_rows(self)
            return Restored("restored")
        return Restored("restored", results)

    @property
    def retired(self) -> bool:
        """True once this store writes nothing: :meth:`retire` was called, or a newer store
        of the same target was handed out (see :meth:`StateStore.target`)."""
        return not self._store._owns(self)

    def retire(self) -> None:
        """Write nothing from now on (the target was removed). Returns once a save in progress,
        if any, has ended: the stored state is then the one it left, or the one before it."""
        self._store._retire(self)

    def save(self, changes: TrackerChanges) -> bool:
        """Write ``changes`` in one transaction (nothing when they are empty); returns False,
        having written nothing, when this store is retired (the target's state is another
        store's, or no one's). Raises ``sqlite3.Error`` or ``OSError`` when they could not be
        written."""
        if changes.empty:
            return not self.retired
        return self._store._save(self, changes)


# --- files ---------------------------------------------------------------------------------


def _lock_directory(directory: Path) -> _LockFile:
    path = directory / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise StateError(f"cannot create {path}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        os.close(fd)
        who = f" (pid {holder})" if holder.isdigit() else ""
        raise StateError(f"{directory} is in use by another exporter{who}") from None
    except OSError as exc:
        os.close(fd)
        raise StateError(f"cannot lock {path}: {exc.strerror or exc}") from None
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return _LockFile(fd)


class _LockFile:
    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the flock
            self._fd = None


def _is_unwritable(exc: sqlite3.DatabaseError) -> bool:
    """An error of the file system or of access, not of the file's content."""
    text = str(exc).lower()
    reasons = ("readonly", "read-only", "unable to open", "disk i/o error", "locked", "busy")
    return any(words in text for words in reasons) or "database or disk is full" in text


def _check_header(path: Path) -> None:
    try:
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StateError(f"cannot read {path}: {exc.strerror or exc}") from None
    if header and header != _SQLITE_HEADER:
        raise _BadFile("not_sqlite", "not an SQLite database")


def _connect(path: Path) -> sqlite3.Connection:
    """Open ``path``, check it is ours and sound, bring its schema up to date."""
    _check_header(path)
    # timeout: another program reading the file (a backup, sqlite3 by hand) may hold it briefly.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=5.0)
    try:
        _prepare(db)
    except BaseException:
        db.close()
        raise
    # Transactions from here on: ``with db`` commits or rolls back.
    db.isolation_level = "DEFERRED"
    return db


def _prepare(db: sqlite3.Connection) -> None:
    application_id = db.execute("PRAGMA application_id").fetchone()[0]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if application_id != APPLICATION_ID and (tables or version):
        raise _BadFile("foreign", "another program's SQLite database")
    if version > SCHEMA_VERSION:
        raise _BadFile("newer_schema", f"schema version {version} is newer than {SCHEMA_VERSION}")
    check = db.execute("PRAGMA quick_check").fetchall()
    if [tuple(row) for row in check] != [("ok",)]:
        raise _BadFile("corrupt", "; ".join(str(row[0]) for row in check[:3]))
    db.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit survives power loss too (a scrape may have seen it).
    db.execute("PRAGMA synchronous=FULL")
    db.execute("BEGIN IMMEDIATE")  # also proves the file can be written
    try:
        for number in range(version, SCHEMA_VERSION):
            for statement in _statements(MIGRATIONS[number]):
                db.execute(statement)
        # Ours by its id and version, yet not the tables we write (one dropped or altered by
        # hand): kept, every save would fail and nothing would ever be persisted.
        if (mismatch := _schema_mismatch(_schema(db))) is not None:
            raise _BadFile("corrupt", mismatch)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


_Schema = dict[str, tuple[tuple[str, str, int, int], ...]]


def _schema(db: sqlite3.Connection) -> _Schema:
    """The tables of ``db`` and their columns (name, declared type, not null, key)."""
    tables = db.execute(
        "SELECT name FROM sqlite_master"
        " WHERE type = 'table' AND name NOT LIKE 'sqlite^_%' ESCAPE '^'"
    ).fetchall()
    return {
        name: tuple(
            db.execute('SELECT name, type, "notnull", pk FROM pragma_table_info(?)', (name,))
        )
        for (name,) in tables
    }


@functools.cache
def _expected_schema() -> _Schema:
    """The tables :data:`MIGRATIONS` make (the one source of what this version writes)."""
    db = sqlite3.connect(":memory:")
    try:
        for script in MIGRATIONS:
            db.executescript(script)
        return _schema(db)
    finally:
        db.close()


def _schema_mismatch(found: _Schema) -> str | None:
    """Why ``found`` is not the schema this version writes, or None."""
    expected = _expected_schema()
    problems = [f"no table {name}" for name in expected if name not in found]
    problems += [f"unknown table {name!r}" for name in found if name not in expected]
    problems += [
        f"columns of {name} differ"
        for name, columns in expected.items()
        if name in found and found[name] != columns
    ]
    return "; ".join(problems) or None


def _statements(script: str) -> Iterator[str]:
    for statement in script.split(";"):
        if statement.strip():
            yield statement
