"""How targets are spread: between exporter processes (shards), and over one's refresh workers.

Horizontal sharding: several exporter processes split the configured targets between them.

Every shard loads the same configuration; each target is owned by exactly one shard, chosen by
a stable digest of the target's identity (:func:`owner`), so the split needs no coordination
and does not change from one start to the next. A shard builds, refreshes and exports only the
targets it owns. As in kube-state-metrics, a shard is told its ordinal (``--shard``, counted from
0) and the number of shards (``--total-shards``; 1, the default, turns sharding off), or takes
its ordinal from the name of its StatefulSet pod (``--pod=NAME``: ``exporter-2`` is shard 2).

Every shard must be started with the same ``--total-shards`` and the same targets: the
``exporter_total_shards`` and ``exporter_configured_targets`` metrics let an alert see when they
are not.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

MAX_TOTAL_SHARDS: Final = 1000
"""More shards than this is a typo (each needs its own process and state volume)."""

# NAME-ORDINAL: a name that does not end with '-' (``-1`` or ``web--1`` is not shard 1), then
# at most 4 digits (more shards than MAX_TOTAL_SHARDS are refused anyway); \Z, unlike $, does
# not match before a trailing newline.
_ORDINAL = re.compile(r"(?<=[^-])-(0|[1-9][0-9]{0,3})\Z")
# A pod name is a DNS subdomain: at most 253 characters.
_MAX_POD_NAME = 253
_T = TypeVar("_T")


class ShardingError(ValueError):
    """Bad sharding flags; ``str()`` is the one-line reason."""


@dataclass(frozen=True)
class Sharding:
    """This process is shard ``shard`` of ``total`` (0 of 1: unsharded, every target owned)."""

    shard: int = 0
    total: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.total <= MAX_TOTAL_SHARDS:
            raise ShardingError(
                f"--total-shards={self.total}: must be between 1 and {MAX_TOTAL_SHARDS}"
            )
        if not 0 <= self.shard < self.total:
            raise ShardingError(
                f"--shard={self.shard}: must be between 0 and {self.total - 1} "
                f"(shards are counted from 0 and --total-shards is {self.total})"
            )

    @property
    def enabled(self) -> bool:
        return self.total > 1

    def owns(self, identity: str) -> bool:
        """Whether the target with ``identity`` is this shard's."""
        return owner(identity, self.total) == self.shard

    def select(self, items: Sequence[_T], identity: Callable[[_T], str]) -> list[_T]:
        """The ``items`` this shard owns, in their order."""
        if not self.enabled:
            return list(items)
        return [item for item in items if self.owns(identity(item))]

    def describe(self, owned: int, configured: int) -> str:
        """``shard 1 of 3 (counted from 0): 4 of 11 targets`` for logs and the landing page;
        ``""`` when not sharded."""
        if not self.enabled:
            return ""
        return (
            f"shard {self.shard} of {self.total} (counted from 0): {owned} of {configured} targets"
        )


def owner(identity: str, total: int) -> int:
    """The shard (``0 .. total - 1``) that owns the target with ``identity``.

    The first 8 bytes of the identity's SHA-256, modulo ``total``: the same on every machine,
    Python version and start (unlike ``hash()``), and spread evenly.
    """
    digest = hashlib.sha256(identity.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % total


def ordinal_of_pod(pod_name: str) -> int:
    """The ordinal of a StatefulSet pod from its name (``exporter-2`` -> 2)."""
    if len(pod_name) > _MAX_POD_NAME:
        raise ShardingError(
            f"--pod: {len(pod_name)} characters, not a StatefulSet pod name "
            f"(at most {_MAX_POD_NAME})"
        )
    match = _ORDINAL.search(pod_name)
    if match is None:
        raise ShardingError(
            f"--pod={pod_name!r}: not a StatefulSet pod name (NAME-ORDINAL, e.g. exporter-0)"
        )
    return int(match.group(1))


def sharding_from_flags(shard: int | None, total: int | None, pod: str | None) -> Sharding:
    """The :class:`Sharding` the flags describe; :class:`ShardingError` when they are wrong.

    ``--shard`` and ``--pod`` exclude each other; either needs ``--total-shards`` above 1 (a
    shard number without a total would silently own every target), and ``--total-shards``
    above 1 needs one of them.
    """
    if shard is not None and pod is not None:
        raise ShardingError("--shard and --pod exclude each other: give one")
    if pod is not None:
        if not pod:
            raise ShardingError("--pod: empty pod name (is the POD_NAME variable set?)")
        shard = ordinal_of_pod(pod)
    total_shards = 1 if total is None else total
    if total_shards > 1 and shard is None:
        raise ShardingError(
            f"--total-shards={total_shards} needs --shard (0 to {total_shards - 1}) "
            "or --pod (the name of a StatefulSet pod)"
        )
    if shard is not None and total is None:
        which = "--pod" if pod is not None else "--shard"
        raise ShardingError(f"{which} needs --total-shards (the number of shards)")
    return Sharding(0 if shard is None else shard, total_shards)


# Refresh workers when ``refresh.workers`` is not set: one per target, within these bounds. A
# worker spends most of a walk waiting (for the API's answer, for the token bucket), so a target
# waiting for a free worker is the bottleneck long before the CPU is; 300 targets of 1,000
# results are all ready within a minute at the default rate limits with 64.
MIN_WORKERS: Final = 4
MAX_WORKERS: Final = 64


def refresh_workers(configured: int | None, targets: int) -> int:
    """Targets refreshed in parallel: ``refresh.workers``, else one per target within
    :data:`MIN_WORKERS` .. :data:`MAX_WORKERS`."""
    if configured is not None:
        return configured
    return min(MAX_WORKERS, max(MIN_WORKERS, targets))
