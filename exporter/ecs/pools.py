"""The ECS clients' HTTP connection pools: one ``httpcore`` pool per API endpoint and region.

httpcore scans every connection of a pool, under the pool's lock, twice per request (when it
starts and when its answer is closed), and an idle connection costs a ``poll`` each time: one
pool shared by 64 refresh workers cost more CPU than the calls it carried. A pool per endpoint
and region holds only the connections that region's targets use at once, while every account
calling that endpoint still reuses them (a TLS handshake saved per refresh when targets refresh
together, as a scrape makes them).

Bounds (the limits the one shared pool had): only the refresh workers call the API, one
request each at a time, so a pool never has more than ``workers`` connections in use; it may
open up to ``max(10, 2 * workers)`` (a request never waits for a connection) and keeps at most
``workers`` idle, each for 5 seconds (an expired one is closed at the pool's next request). In
all, the process holds about as many connections as the targets of each region refresh at
once, at most one per target. A pool that no target uses any more (a reload) is closed once
the refreshes in flight are done (:meth:`ApiPools.retain`), every pool at shutdown
(:meth:`ApiPools.close`).
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Collection, Hashable

import httpcore

from exporter.ecs.transport import api_connection_pool


class ApiPools:
    """The connection pools of the ECS clients, by key (an endpoint and a region), made on first
    use with the limits the module docstring describes. Thread-safe."""

    def __init__(self, *, ssl_context: ssl.SSLContext, workers: int) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max(10, 2 * workers)
        self._max_idle = max(1, workers)
        self._lock = threading.Lock()
        self._pools: dict[Hashable, httpcore.ConnectionPool] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._pools)

    def pool(self, key: Hashable) -> httpcore.ConnectionPool:
        """The pool of ``key``, made now if there is none."""
        with self._lock:
            found = self._pools.get(key)
            if found is None:
                found = self._pools[key] = api_connection_pool(
                    ssl_context=self._ssl_context,
                    max_connections=self._max_connections,
                    max_keepalive_connections=self._max_idle,
                )
            return found

    def retain(self, keys: Collection[Hashable]) -> list[httpcore.ConnectionPool]:
        """Forget the pools of keys not in ``keys`` and return them: the caller closes them
        once no request can be using them (a refresh in flight may still be)."""
        with self._lock:
            gone = [key for key in self._pools if key not in keys]
            return [self._pools.pop(key) for key in gone]

    def close(self) -> None:
        """Close every pool (shutdown; a pool asked for later is made afresh)."""
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()
