"""Write the generated parts of docs/metrics.md from the metric contract (exporter/metrics.py).

    python docs/generate_metrics.py            # rewrite the generated parts of docs/metrics.md
    python docs/generate_metrics.py --check    # exit 1 if the committed file is out of date

Each generated part sits between ``<!-- BEGIN GENERATED: <part> -->`` and
``<!-- END GENERATED: <part> -->``; the prose around them is written by hand.
tests/test_metrics_doc.py fails when the committed file is stale.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from exporter import metrics as m

DOC = Path(__file__).resolve().parent / "metrics.md"
TYPES = {"gauge": "gauge", "counter": "counter", "histogram": "histogram"}


def _code(values: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"`{value}`" for value in values)


def _preinitialised(spec: m.MetricSpec) -> str:
    if spec.preinitialised_note:
        return spec.preinitialised_note
    return "—" if spec.labels else "always"


def reference() -> str:
    """The table of every family."""
    rows = [
        "| name | type | extra labels | unit | pre-initialised | meaning |",
        "|---|---|---|---|---|---|",
    ]
    for spec in m.METRICS:
        labels = _code(spec.labels) if spec.labels else "—"
        meaning = spec.help + (" " + spec.doc if spec.doc else "")
        if spec.buckets:
            meaning += " Buckets: " + ", ".join(f"{bound:g}" for bound in spec.buckets) + "."
        if spec.opt_in:
            rest = meaning.removeprefix("Opt-in: ")
            meaning = "**Opt-in.** " + rest[:1].upper() + rest[1:]
        rows.append(
            f"| `{spec.name}` | {TYPES[spec.type]} | {labels} | {spec.unit or '—'} "
            f"| {_preinitialised(spec)} | {meaning.replace('|', '/')} |"
        )
    return "\n".join(rows)


def pairs() -> str:
    """The status x ErrorCode pairs pre-initialised, with their source."""
    rows = [
        "| `invocation_status` | `error_code` | why the API produces it (API reference) |",
        "|---|---|---|",
    ]
    for pair in m.FINISHED_PAIRS:
        status, code = pair.key
        rows.append(f"| {status} | `{code}` | {pair.source.replace('|', '/')} |")
    return "\n".join(rows)


def cardinality() -> str:
    """Series per target with default settings, before anything happened."""
    rows = ["| family | series per target |", "|---|---|"]
    total = 0
    for spec, series in m.per_target_series():
        if series:
            total += series
            rows.append(f"| `{spec.name.removeprefix(m.PREFIX)}` | {series} |")
    rows.append(f"| **total** | **{total}** |")
    return "\n".join(rows)


PARTS: dict[str, Callable[[], str]] = {
    "reference": reference,
    "pairs": pairs,
    "cardinality": cardinality,
}


def render(text: str) -> str:
    """``text`` with every generated part rewritten."""
    for name, part in PARTS.items():
        pattern = re.compile(
            rf"(<!-- BEGIN GENERATED: {name} [^\n]*-->\n).*?(<!-- END GENERATED: {name} -->)",
            re.DOTALL,
        )
        match = pattern.search(text)
        if match is None:
            raise SystemExit(f"error: {DOC.name} has no generated part {name!r}")
        text = text[: match.end(1)] + part() + "\n" + text[match.start(2) :]
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    current = DOC.read_text(encoding="utf-8")
    wanted = render(current)
    if args.check:
        if current != wanted:
            print(
                f"{DOC.name} is out of date: run python docs/generate_metrics.py", file=sys.stderr
            )
            return 1
        return 0
    if current != wanted:
        DOC.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
