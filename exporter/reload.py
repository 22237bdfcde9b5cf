"""Reloading the configuration of a running exporter (SIGHUP, ``POST /-/reload``).

A reload reads the config file and the web config again, as a start would, and applies them
only when both are valid: a bad new config is refused with one error line (the wording of the
same error at start-up) and the running one goes on unchanged.

Which refreshers survive is :func:`plan_reload`'s decision, made on the targets' identities
(:func:`exporter.state.target_identity`): a target whose identity is unchanged keeps its
refresher, with its tracker, counters and any refresh in flight; a new identity starts a new
refresher, and one no longer configured is retired (its series disappear from the next scrape,
and a refresh of it still in flight saves nothing: the target may be added back meanwhile, with a
new refresher that restored its state; see ``TargetRefresher.retire``).

:class:`ReloadStatus` is what ``..._config_last_reload_successful`` and
``..._config_last_reload_success_timestamp_seconds`` show, as Prometheus exposes them: the start
counts as the first successful load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from exporter.logs import describe_exception

log = logging.getLogger(__name__)

Running = TypeVar("Running")
Wanted = TypeVar("Wanted")


@dataclass(frozen=True)
class ReloadPlan(Generic[Running, Wanted]):
    """What a reload does to the running targets.

    ``keep`` pairs each running target that stays with what the new config says of it, in the
    new config's order; ``start`` are the new config's targets with no running counterpart;
    ``stop`` the running ones the new config no longer has.
    """

    keep: tuple[tuple[Running, Wanted], ...]
    start: tuple[Wanted, ...]
    stop: tuple[Running, ...]


def plan_reload(
    running: Mapping[str, Running], wanted: Sequence[tuple[str, Wanted]]
) -> ReloadPlan[Running, Wanted]:
    """Match ``running`` (by identity) with ``wanted`` (identity, target) of a new config.

    A running target is kept by the first wanted target of the same identity; a second wanted
    target of that identity (a config listing the same target twice) starts its own.
    """
    keep: list[tuple[Running, Wanted]] = []
    start: list[Wanted] = []
    matched: set[str] = set()
    for identity, target in wanted:
        if identity in running and identity not in matched:
            matched.add(identity)
            keep.append((running[identity], target))
        else:
            start.append(target)
    stop = tuple(item for identity, item in running.items() if identity not in matched)
    return ReloadPlan(tuple(keep), tuple(start), stop)


class ReloadStatus:
    """Whether the last reload succeeded and when the configuration was last loaded.

    Starts as a success at creation (the start-up load), as Prometheus counts it.
    """

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # Replaced, never changed: the same object while nothing happened (a scrape's rendering
        # is reused while the objects it was made from are the same).
        self._state: tuple[bool, float] = (True, clock())

    def succeeded(self) -> None:
        """A reload was applied now."""
        with self._lock:
            self._state = (True, self._clock())

    def failed(self) -> None:
        """A reload was refused: the previous configuration goes on."""
        with self._lock:
            self._state = (False, self._state[1])

    def read(self) -> tuple[bool, float]:
        """(last reload successful, Unix time of the last successful load)."""
        return self._state


class ReloadError(Exception):
    """A new configuration was refused; ``str()`` is the one-line reason (no secret)."""


class Reloader:
    """Runs reloads one at a time, from a signal or an HTTP request alike.

    ``load`` reads and checks the configuration (raising :class:`ReloadError` when it is bad)
    and returns the function that applies it, which may still raise ``ReloadError`` (a value
    validation let through but a constructor refused) before it changed anything.
    """

    def __init__(
        self,
        load: Callable[[], Callable[[], str]],
        status: ReloadStatus,
    ) -> None:
        self._load = load
        self.status = status
        self._lock = threading.Lock()

    def reload(self, trigger: str) -> str | None:
        """Reload now; returns None when applied, else the reason it was refused (logged)."""
        with self._lock:
            try:
                apply = self._load()
                summary = apply()
            except ReloadError as exc:
                self.status.failed()
                log.error(
                    "reload refused, the running configuration is kept",
                    extra={"trigger": trigger, "err": str(exc)},
                )
                return str(exc)
            except Exception as exc:  # a bug: the running configuration goes on all the same
                self.status.failed()
                reason = describe_exception(exc)
                log.error(
                    "reload failed, the running configuration is kept",
                    extra={"trigger": trigger, "err": reason},
                )
                return reason
            self.status.succeeded()
            log.info("configuration reloaded", extra={"trigger": trigger, "targets": summary})
            return None
