"""A strict TypeScript typecheck of the rendered dashboards against Grafana's @grafana/schema.

Each dashboard becomes one .ts file that declares every panel as a constant typed by its
plugin's options (dashboards/typecheck/dashboard-types.ts) and the whole as `Dashboard`; `tsc`
(strict, no emit) then reports unknown keys, wrong enum values and wrong shapes. typescript and
@grafana/schema come from npm, pinned in dashboards/typecheck/package-lock.json and installed by
`make npm-deps` (what `make test` runs).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

TYPECHECK_DIR = Path(__file__).resolve().parents[1] / "dashboards" / "typecheck"
TSC = TYPECHECK_DIR / "node_modules" / ".bin" / "tsc"
PANEL_TYPES = {
    "stat": "StatPanel",
    "timeseries": "TimeSeriesPanel",
    "table": "TablePanel",
    "bargauge": "BarGaugePanel",
    "row": "RowPanel",
}
_PANELS_PLACEHOLDER = "__PANELS__"


def render_typescript(dashboard: dict[str, Any]) -> str:
    """The .ts file for one dashboard (a panel of an unknown type gets the type `never`)."""
    names = sorted(set(PANEL_TYPES.values()))
    lines = [f"import type {{ Dashboard, {', '.join(names)} }} from './dashboard-types.js';", ""]
    constants = []
    for number, panel in enumerate(dashboard["panels"]):
        constant = f"panel_{number}"
        kind = PANEL_TYPES.get(str(panel.get("type")), "never")
        lines.append(f"const {constant}: {kind} = {json.dumps(panel, indent=2)};")
        constants.append(constant)
    body = json.dumps({**dashboard, "panels": _PANELS_PLACEHOLDER}, indent=2)
    body = body.replace(f'"{_PANELS_PLACEHOLDER}"', f"[{', '.join(constants)}]")
    lines.append(f"export const dashboard: Dashboard = {body};")
    return "\n".join(lines) + "\n"


def typecheck(
    dashboards: dict[str, dict[str, Any]], workdir: Path
) -> subprocess.CompletedProcess[str]:
    """Run tsc on the dashboards (name -> JSON) in `workdir`; returncode 0 means they check."""
    for name in ("tsconfig.json", "dashboard-types.ts"):
        shutil.copy(TYPECHECK_DIR / name, workdir / name)
    (workdir / "node_modules").symlink_to(TYPECHECK_DIR / "node_modules")
    for name, dashboard in dashboards.items():
        (workdir / name.replace(".json", ".ts")).write_text(render_typescript(dashboard))
    return subprocess.run(
        [str(TSC), "-p", str(workdir)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=workdir,
    )
