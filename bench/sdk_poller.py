"""The baseline of `make bench`: a naive poller written with Alibaba's official SDK.

It does what a straightforward exporter would do on every scrape: page through every result with
``describe_invocation_results`` (50 per page) and count them by status. Run as its own process so
its imports, CPU time and memory are measured alone; it prints one JSON line of figures.

    python bench/sdk_poller.py --endpoint 127.0.0.1:PORT --access-key-id ID --access-key-secret S \
        --region cn-hangzhou --walks 2
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from collections import Counter
from typing import Any

from bench.measure import cpu_seconds, memory_mb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--endpoint", required=True, help="host:port of the simulator")
    parser.add_argument("--access-key-id", required=True)
    parser.add_argument("--access-key-secret", required=True)
    parser.add_argument("--region", default="cn-hangzhou")
    parser.add_argument("--walks", type=int, default=2)
    args = parser.parse_args(argv)

    cpu0, wall0 = cpu_seconds(), time.perf_counter()
    from alibabacloud_ecs20140526 import models as ecs_models
    from alibabacloud_ecs20140526.client import Client
    from alibabacloud_tea_openapi import models as openapi_models

    import_cpu, import_wall = cpu_seconds() - cpu0, time.perf_counter() - wall0
    import_rss = memory_mb()["VmHWM"]

    config = openapi_models.Config(
        access_key_id=args.access_key_id,
        access_key_secret=args.access_key_secret,
        endpoint=args.endpoint,
        protocol="http",
        region_id=args.region,
    )
    client = Client(config)
    walks: list[dict[str, Any]] = []
    for _ in range(args.walks):
        gc.collect()  # as bench.exporter_refresh does: no walk pays for the garbage of another
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        calls, results, token = 0, 0, ""
        by_status: Counter[str] = Counter()
        while True:
            request = ecs_models.DescribeInvocationResultsRequest(
                region_id=args.region, max_results=50, next_token=token or None
            )
            answer = client.describe_invocation_results(request)
            calls += 1
            invocation = answer.body.invocation
            page = invocation.invocation_results.invocation_result or []
            results += len(page)
            by_status.update(r.invocation_status or "" for r in page)
            token = invocation.next_token or ""
            if not token or not page:
                break
        walks.append(
            {
                "api_calls": calls,
                "results": results,
                "cpu_seconds": cpu_seconds() - cpu0,
                "wall_seconds": time.perf_counter() - wall0,
            }
        )
    print(
        json.dumps(
            {
                "import_cpu_seconds": import_cpu,
                "import_wall_seconds": import_wall,
                "import_rss_mb": import_rss,
                "walks": walks,
                "peak_rss_mb": memory_mb()["VmHWM"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
