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

from bench.measure import memory_mb


def main() -> int:
    figures = {"interpreter": memory_mb()["VmRSS"]}
    for name in ("httpx", "pydantic_settings", "yaml", "prometheus_client"):
        importlib.import_module(name)
    figures["stack"] = memory_mb()["VmRSS"]
    import httpx

    client = httpx.Client()
    figures["tls_client"] = memory_mb()["VmRSS"]
    importlib.import_module("exporter.cli")
    figures["exporter"] = memory_mb()["VmRSS"]
    figures["modules"] = len(sys.modules)
    client.close()
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
