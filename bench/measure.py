"""What every benchmark process reads about itself (or another process) from the kernel."""

from __future__ import annotations

import resource
from pathlib import Path

MEMORY_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def cpu_seconds() -> float:
    """User plus system CPU time of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def memory_mb(pid: int | str = "self") -> dict[str, float]:
    """``VmRSS`` (now), ``VmHWM`` (peak), ``RssAnon`` and ``RssFile`` of a process, in MB."""
    figures: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        name, _, value = line.partition(":")
        if name in MEMORY_FIELDS:
            figures[name] = int(value.split()[0]) / 1024
    return figures
