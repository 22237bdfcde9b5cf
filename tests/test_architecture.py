"""The import rules of docs/architecture.md, checked on the source.

Every module under ``exporter/`` is parsed (no import runs): imports at module level, inside
functions and under ``TYPE_CHECKING`` all count. A new module must be placed in a layer of
:data:`LAYERS` (and in docs/architecture.md) before this test passes.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "exporter"


@dataclass(frozen=True)
class Layer:
    """Modules (names or ``prefix.*``), the exporter modules they may import, and the
    third-party or standard-library top-level modules they must not import."""

    name: str
    modules: tuple[str, ...]
    may_import: tuple[str, ...]
    must_not_import: frozenset[str] = frozenset()


# The modules that do I/O or serve: none of them in the pure layers.
IO = frozenset(
    {
        "asyncio",
        "concurrent",
        "fcntl",
        "http",
        "httpcore",
        "httpx",
        "io",
        "logging",
        "os",
        "pathlib",
        "prometheus_client",
        "socket",
        "sqlite3",
        "ssl",
        "subprocess",
        "threading",
        "time",
        "urllib",
    }
)
BASE = ("exporter", "exporter.files", "exporter.validation", "exporter.logs")
TRACKING = (
    "exporter.runledger",
    "exporter.viewentry",
    "exporter.arrivals",
    "exporter.backlog",
    "exporter.viewqueries",
    "exporter.viewindex",
    "exporter.summaries",
    "exporter.counters",
    "exporter.trackerstate",
    "exporter.tracking",
)

# Bottom to top; a layer may import what its ``may_import`` lists, nothing else of exporter/.
LAYERS = (
    Layer(
        "base: leaves (version, files, plain-words errors, logging, sockets, signals, reload, "
        "sharding)",
        (
            "exporter",
            "exporter.allocator",
            "exporter.reload",
            "exporter.sharding",
            "exporter.signals",
            "exporter.files",
            "exporter.validation",
            "exporter.logs",
            "exporter.listeners",
            "exporter.workers",
        ),
        # (validation imports nothing of exporter/: the plain-words rules, secret_forms.)
        ("exporter", "exporter.logs", "exporter.validation"),
        frozenset({"prometheus_client", "httpx", "httpcore"}),
    ),
    Layer(
        "ecs: everything Alibaba-specific",
        ("exporter.ecs", "exporter.ecs.*"),
        ("exporter", "exporter.files", "exporter.validation", "exporter.ecs", "exporter.ecs.*"),
        frozenset({"prometheus_client"}),
    ),
    Layer(
        "metrics: the metric contract",
        ("exporter.metrics",),
        ("exporter.ecs.*",),
        IO,
    ),
    Layer(
        "tracking: pure counting logic and its saved form",
        TRACKING,
        ("exporter.ecs.models", "exporter.ecs.errors", "exporter.metrics", *TRACKING),
        IO,
    ),
    Layer(
        "state: the state directory",
        ("exporter.state",),
        ("exporter", "exporter.ecs.models", "exporter.metrics", *TRACKING),
        frozenset({"httpx", "httpcore"}),
    ),
    Layer(
        "refresh: reading the API for one target",
        ("exporter.refresh", "exporter.refresh.*"),
        (
            "exporter.ecs.*",
            "exporter.metrics",
            *TRACKING,
            "exporter.state",
            "exporter.logs",
            "exporter.refresh",
            "exporter.refresh.*",
        ),
        frozenset({"prometheus_client", "httpx", "httpcore", "socket", "sqlite3"}),
    ),
    Layer(
        "collector: snapshots to metric families, no I/O",
        ("exporter.collector",),
        ("exporter", "exporter.metrics", *TRACKING, "exporter.refresh", "exporter.reload"),
        IO - {"prometheus_client", "threading"},
    ),
    Layer(
        "settings: the configuration",
        ("exporter.settings", "exporter.settings.*"),
        (
            "exporter.files",
            "exporter.validation",
            "exporter.ecs.*",
            "exporter.settings",
            "exporter.settings.*",
        ),
        frozenset({"prometheus_client", "httpx", "httpcore"}),
    ),
    Layer(
        "http: the exporter's HTTP server",
        (
            "exporter.webconfig",
            "exporter.webwatch",
            "exporter.connections",
            "exporter.scrapecache",
            "exporter.server",
        ),
        (
            *BASE,
            "exporter.webwatch",
            "exporter.listeners",
            "exporter.workers",
            "exporter.webconfig",
            "exporter.connections",
            "exporter.scrapecache",
        ),
        frozenset({"httpx", "httpcore"}),
    ),
    Layer(
        "app: the wiring",
        ("exporter.app", "exporter.targets"),
        (
            *BASE,
            "exporter.allocator",
            "exporter.sharding",
            "exporter.targets",
            "exporter.reload",
            "exporter.signals",
            "exporter.webwatch",
            "exporter.ecs.*",
            "exporter.metrics",
            *TRACKING,
            "exporter.state",
            "exporter.refresh",
            "exporter.refresh.*",
            "exporter.collector",
            "exporter.settings",
            "exporter.settings.*",
            "exporter.listeners",
            "exporter.workers",
            "exporter.webconfig",
            "exporter.connections",
            "exporter.server",
        ),
    ),
    Layer(
        "simulator: an independent ECS API (shares only the API's models and signing)",
        ("exporter.simulator", "exporter.simulator.*"),
        (
            "exporter.ecs",
            "exporter.ecs.models",
            "exporter.ecs.signing",
            "exporter.simulator",
            "exporter.simulator.*",
        ),
        frozenset({"prometheus_client", "httpx", "httpcore"}),
    ),
    Layer(
        "demo: the simulator and the exporter against it (--demo)",
        ("exporter.demo",),
        (
            "exporter.app",
            "exporter.server",
            "exporter.settings",
            "exporter.webconfig",
            "exporter.simulator.*",
        ),
    ),
    Layer(
        "cli: the command line",
        ("exporter.cli", "exporter.__main__"),
        (
            *BASE,
            "exporter.cli",
            "exporter.allocator",
            "exporter.app",
            "exporter.connections",
            "exporter.ecs.errors",
            "exporter.server",
            "exporter.settings",
            "exporter.state",
            "exporter.webconfig",
            "exporter.reload",
            "exporter.sharding",
            "exporter.signals",
            "exporter.webwatch",
            "exporter.demo",
        ),
    ),
)


@dataclass(frozen=True)
class Import:
    """One import statement's target as seen from ``module``."""

    module: str
    target: str  # an exporter module, or the top-level name of another package
    line: int
    in_function: bool


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _functions(tree: ast.AST) -> set[int]:
    """The ids of the import nodes inside a function body."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inside.update(
                id(n) for n in ast.walk(node) if isinstance(n, ast.Import | ast.ImportFrom)
            )
    return inside


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join([*base, *([node.module] if node.module else [])])


@cache
def imports() -> tuple[Import, ...]:
    known = modules()
    found: list[Import] = []
    for module, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        inside = _functions(tree)
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _resolve(module, path, node)
                for alias in node.names:
                    # `from exporter import metrics` imports a module; `from exporter import
                    # __version__` imports the package.
                    full = f"{source}.{alias.name}"
                    targets.append(full if full in known else source)
            else:
                continue
            for target in targets:
                if not target.startswith("exporter"):
                    target = target.split(".")[0]
                found.append(Import(module, target, node.lineno, id(node) in inside))
    return tuple(found)


def _matches(module: str, patterns: tuple[str, ...]) -> bool:
    return any(module.startswith(p[:-1]) if p.endswith(".*") else module == p for p in patterns)


def layer_of(module: str) -> Layer:
    (layer,) = [layer for layer in LAYERS if _matches(module, layer.modules)]
    return layer


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {module: set() for module in modules()}
    for imp in imports():
        if imp.target in edges and imp.target != imp.module:
            edges[imp.module].add(imp.target)
    return edges


def cycles(edges: dict[str, set[str]]) -> Iterator[list[str]]:
    """One cycle per strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> Iterator[list[str]]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                yield from visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                yield sorted(component)

    for node in sorted(edges):
        if node not in index:
            yield from visit(node)


def test_the_parser_sees_every_kind_of_import() -> None:
    """The checks below are only as good as the import list: it has the known edges, including
    one inside a function (cli's --demo path)."""
    seen = {(imp.module, imp.target, imp.in_function) for imp in imports()}
    assert ("exporter.cli", "exporter.demo", True) in seen
    assert ("exporter.ecs.client", "exporter.ecs.signing", False) in seen  # `from pkg import mod`
    assert ("exporter.cli", "exporter", False) in seen  # `from exporter import __version__`
    assert ("exporter.collector", "prometheus_client", False) in seen


def test_cycle_finder_finds_a_cycle() -> None:
    found = list(cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}))
    assert found == [["a", "b", "c"]]


def test_no_import_cycle() -> None:
    assert list(cycles(graph())) == []


@pytest.mark.parametrize("module", sorted(modules()))
def test_every_module_has_one_layer(module: str) -> None:
    matching = [layer.name for layer in LAYERS if _matches(module, layer.modules)]
    assert len(matching) == 1, f"{module}: place it in exactly one layer (now {matching})"


def test_layers_import_only_what_they_may() -> None:
    wrong = []
    for imp in imports():
        layer = layer_of(imp.module)
        if imp.target.startswith("exporter"):
            allowed = imp.target == imp.module or _matches(imp.target, layer.may_import)
        else:
            allowed = imp.target not in layer.must_not_import
        if not allowed:
            wrong.append(f"{imp.module}:{imp.line} imports {imp.target} ({layer.name})")
    assert wrong == []


def test_the_simulator_stays_out_of_production_paths() -> None:
    """Only the demo imports the simulator, and only cli's --demo path (inside a function)
    imports the demo: a normal start never loads the simulator."""
    for imp in imports():
        if imp.target.startswith("exporter.simulator") and not imp.module.startswith(
            "exporter.simulator"
        ):
            assert imp.module == "exporter.demo", imp
        if imp.target == "exporter.demo":
            assert (imp.module, imp.in_function) == ("exporter.cli", True), imp


def test_test_support_is_never_imported_by_the_package() -> None:
    assert [imp for imp in imports() if imp.target == "tests"] == []


def test_modules_stay_small() -> None:
    """No production module over about 600 lines (the team's guide): split along a seam first."""
    long = {
        module: lines
        for module, path in modules().items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 650
    }
    assert long == {}


def test_docs_list_every_module() -> None:
    """docs/architecture.md's module tree names every module (a new one is documented)."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    tree = text.split("```")[1]
    missing = [
        str(path.relative_to(ROOT))
        for path in modules().values()
        if path.name != "__init__.py" and path.name not in tree
    ]
    assert missing == []
