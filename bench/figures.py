"""What a bench run judges and keeps: its goals (:class:`Target`), the figures file it writes
(``--json``) and the earlier one it shows beside its own (``--before``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.process import BenchError


@dataclass(frozen=True)
class Target:
    """One performance target: ``value <= limit`` (or ``< limit`` when ``strict``)."""

    label: str
    limit: float
    unit: str
    strict: bool = True

    def met(self, value: float) -> bool:
        return value < self.limit if self.strict else value <= self.limit


def read_figures(path: Path | None) -> dict[str, Any] | None:
    """The figures an earlier run wrote to ``path`` (None without one); a BenchError when they
    cannot be read, before anything is measured."""
    if path is None:
        return None
    try:
        figures: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"--before {path}: {exc}") from None
    return figures


def write_figures(path: Path | None, figures: dict[str, Any]) -> None:
    """Write ``figures`` to ``path`` (nothing without one), for a later run's ``--before``."""
    if path is not None:
        path.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
