"""``--demo``: the built-in API simulator with a lively workload, and the exporter reading it.

The simulator serves two regions of the ``demo`` profile (a new invocation every few seconds,
every status, error code and OSS state on show) on a free loopback port; the exporter runs
against it with a short refresh interval, exactly as it would against the real API (signed
requests, paging, rate limiting). Nothing leaves the machine.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Final, TextIO

from exporter.app import build_application, serve
from exporter.server import ExporterHTTPServer
from exporter.settings import ExporterSettings
from exporter.simulator.server import SimulatorServer
from exporter.simulator.world import WallClock, World
from exporter.webconfig import WebConfig

DEMO_REGIONS: Final = ("cn-hangzhou", "cn-beijing")
DEMO_ACCOUNT: Final = "demo"
# A made-up key known only to the simulator this process starts.
DEMO_ACCESS_KEY_ID: Final = "LTAI5tDemoAccessKeyId"
DEMO_ACCESS_KEY_SECRET: Final = "demo-access-key-secret-not-a-real-one"
DEMO_PROFILE: Final = "demo"


def demo_settings(simulator_url: str) -> ExporterSettings:
    """One account in :data:`DEMO_REGIONS`, read from the simulator, refreshed every 5 s."""
    return ExporterSettings.model_validate(
        {
            "targets": [
                {
                    "name": DEMO_ACCOUNT,
                    "region_ids": list(DEMO_REGIONS),
                    "endpoint": simulator_url,
                    "credentials": {
                        "source": "static",
                        "access_key_id": DEMO_ACCESS_KEY_ID,
                        "access_key_secret": DEMO_ACCESS_KEY_SECRET,
                    },
                    "command_breakdown": {"enabled": True, "max_command_ids": 10},
                }
            ],
            "refresh": {"min_interval_seconds": 5, "sweep_interval_seconds": 60},
        }
    )


def start_simulator(seed: int = 7) -> SimulatorServer:
    """The demo's simulator, started on a free loopback port (close it when done)."""
    clock = WallClock()
    worlds = {
        region: World(seed=seed + index, clock=clock, spec=DEMO_PROFILE)
        for index, region in enumerate(DEMO_REGIONS)
    }
    simulator = SimulatorServer(
        worlds, accounts={DEMO_ACCESS_KEY_ID: DEMO_ACCESS_KEY_SECRET}, host="127.0.0.1", port=0
    )
    return simulator.start()


def instructions(exporter_url: str, telemetry_path: str, simulator_url: str) -> str:
    """What the user reads when the demo is up."""
    metrics_url = exporter_url + telemetry_path
    return f"""
Demo running: the exporter reads a simulated Cloud Assistant API
({", ".join(DEMO_REGIONS)}; a new invocation every few seconds, refreshed every 5 s).

  Exporter:   {exporter_url}/
  Metrics:    {metrics_url}
  Simulator:  {simulator_url}  (the fake ECS API; it only answers signed requests)

Try:
  curl -s {metrics_url} | grep '^aliyun_cloudassistant_invocation_results{{'
  curl -s {metrics_url} | grep finished_total | grep -v ' 0.0$'

Press Ctrl-C to stop.
"""


def run_demo(
    *,
    listen_address: tuple[str, int],
    telemetry_path: str = "/metrics",
    web_config: WebConfig | None = None,
    out: TextIO | None = None,
) -> int:
    """Start the simulator and serve the exporter against it until Ctrl-C; the exit code."""
    stream = out if out is not None else sys.stdout
    simulator = start_simulator()
    try:
        settings = demo_settings(simulator.url)
        application = build_application(settings)

        def announce(server: ExporterHTTPServer) -> None:
            url = server.url.replace("://0.0.0.0:", "://127.0.0.1:").replace(
                "://[::]:", "://[::1]:"
            )
            print(instructions(url, telemetry_path, simulator.url), file=stream, flush=True)

        on_listening: Callable[[ExporterHTTPServer], None] = announce
        return serve(
            application,
            listen_address=listen_address,
            telemetry_path=telemetry_path,
            web_config=web_config,
            on_listening=on_listening,
        )
    finally:
        simulator.close()
