"""Where the exporter's memory goes before it holds any result, measured in its own process.

Prints one JSON line with the resident set size (``VmRSS``, MB) after each step:

1. ``interpreter``: Python with ``site`` (nothing of ours imported);
2. ``stack``: the libraries the design mandates (httpx, pydantic-settings with YAML,
   prometheus-client), which pull in asyncio, ssl, email, urllib.request and pydantic-core;
3. ``tls_client``: one ``httpx.Client`` (its TLS context loads the CA bundle);
4. ``exporter``: every module ``python -m exporter`` imports.

The difference between 4 and 3 is what the exporter's own modules cost; 3 is a floor no change
to this project's code can go below.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    figures = {"interpreter": _rss_mb()}
    for name in ("httpx", "pydantic_settings", "yaml", "prometheus_client"):
        importlib.import_module(name)
    figures["stack"] = _rss_mb()
    import httpx

    client = httpx.Client()
    figures["tls_client"] = _rss_mb()
    importlib.import_module("exporter.cli")
    figures["exporter"] = _rss_mb()
    figures["modules"] = len(sys.modules)
    client.close()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
