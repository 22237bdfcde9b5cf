"""What makes a configured target the same target across reloads and restarts.

One function, used by the reload (a target whose identity is unchanged keeps its refresher,
tracker and counters) and by the durable state (the key of a target's saved tracker).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

from exporter.ecs.models import InvocationQuery


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
    every existing identity. Credentials, rate limits and refresh options are not part of it:
    changing them keeps the target's counters.
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
