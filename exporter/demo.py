"""``--demo``: the built-in API simulator with a lively workload, and the exporter reading it.

The simulator serves two regions of a workload profile (``demo`` by default: a new invocation
every few seconds, every status, error code and OSS state on show) on a free loopback port; the
exporter runs against it with a short refresh interval, exactly as it would against the real API
(signed requests, paging, rate limiting). Nothing leaves the machine.

Unlike a production exporter, whose refreshes are driven by Prometheus' scrapes, the demo
refreshes by itself: someone who only watches the landing page sees the numbers move.

The commands the banner suggests work as printed with a ``--web.config.file``: HTTPS with the
certificate as the CA to trust and a host name the certificate holds, and ``-u USER`` (curl asks
for the password) when basic auth is on.
"""

from __future__ import annotations

import ipaddress
import shlex
import ssl
import sys
import threading
from pathlib import Path
from typing import Any, Final, TextIO
from urllib.parse import urlsplit

from exporter.app import Application, build_application, serve
from exporter.server import ExporterHTTPServer
from exporter.settings import ExporterSettings
from exporter.simulator.clock import WallClock
from exporter.simulator.server import SimulatorServer
from exporter.simulator.spec import PROFILES
from exporter.simulator.world import World
from exporter.webconfig import WebConfig

DEMO_REGIONS: Final = ("cn-hangzhou", "cn-beijing")
DEMO_ACCOUNT: Final = "demo"
# A made-up key known only to the simulator this process starts.
DEMO_ACCESS_KEY_ID: Final = "LTAI5tDemoAccessKeyId"
DEMO_ACCESS_KEY_SECRET: Final = "demo-access-key-secret-not-a-real-one"
DEMO_PROFILE: Final = "demo"
DEMO_PROFILES: Final = tuple(sorted(PROFILES))
DEMO_REFRESH_SECONDS: Final = 5
# How often the demo's own ticker asks every target whether a refresh is due.
_TICK_SECONDS: Final = 1.0


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
            "refresh": {
                "min_interval_seconds": DEMO_REFRESH_SECONDS,
                "sweep_interval_seconds": 60,
            },
        }
    )


def start_simulator(seed: int = 7, profile: str = DEMO_PROFILE) -> SimulatorServer:
    """The demo's simulator, started on a free loopback port (close it when done)."""
    clock = WallClock()
    worlds = {
        region: World(seed=seed + index, clock=clock, spec=profile)
        for index, region in enumerate(DEMO_REGIONS)
    }
    simulator = SimulatorServer(
        worlds, accounts={DEMO_ACCESS_KEY_ID: DEMO_ACCESS_KEY_SECRET}, host="127.0.0.1", port=0
    )
    return simulator.start()


def keep_refreshing(
    application: Application, stop: threading.Event, tick: float = _TICK_SECONDS
) -> threading.Thread:
    """Start a thread that refreshes every target when due, without waiting for scrapes.

    Demo only: in production a refresh starts when Prometheus scrapes (so an unscraped exporter
    spends no API calls). The thread ends when ``stop`` is set.
    """

    def run() -> None:
        while not stop.wait(tick):
            application.start_refreshes()

    thread = threading.Thread(target=run, name="demo-refresh", daemon=True)
    thread.start()
    return thread


# -- commands that work against this exporter ------------------------------------------------


def _certificate_names(cert_file: Path) -> tuple[list[str], list[str]] | None:
    """(DNS names, IP addresses) a self-signed certificate is valid for; None if unknown.

    ``ssl`` decodes only the certificates it loads as trust anchors: a self-signed certificate
    (the usual demo case) is one; a certificate issued by a CA is not, and its names are then
    left to the user.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_verify_locations(cafile=cert_file)
    except (OSError, ssl.SSLError):
        return None
    certificates = context.get_ca_certs()
    if not certificates:
        return None
    first: dict[str, Any] = dict(certificates[0])
    dns: list[str] = []
    ips: list[str] = []
    for kind, value in first.get("subjectAltName", ()):
        if kind == "DNS":
            dns.append(str(value))
        elif kind == "IP Address":
            ips.append(str(value))
    if not dns and not ips:  # no SAN: curl falls back to the common name
        for rdn in first.get("subject", ()):
            dns.extend(str(value) for key, value in rdn if key == "commonName")
    return dns, ips


def _same_ip(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a.strip("[]")) == ipaddress.ip_address(b.strip("[]"))
    except ValueError:
        return False


def https_options(base_url: str, cert_file: Path) -> tuple[str, list[str], str]:
    """The base URL, curl options and a note for reaching a TLS exporter at ``base_url``.

    The certificate itself is the CA to trust (curl accepts a certificate that is not a CA as
    its own trust anchor too). The URL's host must be one the certificate names: when the
    listening address is not, a DNS name of the certificate is used and ``--resolve`` sends it
    to the listening address.
    """
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or 443
    options = ["--cacert", str(cert_file.absolute())]
    names = _certificate_names(cert_file)
    if names is None:
        note = (
            f"(if the certificate does not name {host}, add --resolve NAME:{port}:{host} and "
            f"use https://NAME:{port} with a name it has)"
        )
        return base_url, options, note
    dns, ips = names
    if any(_same_ip(host, ip) for ip in ips) or host in dns:
        return base_url, options, ""
    # A wildcard name stands for any one label: "demo." makes it a name curl accepts.
    usable = [f"demo.{name[2:]}" if name.startswith("*.") else name for name in dns]
    usable = [name for name in usable if "*" not in name]
    if not usable:
        note = f"(the certificate names neither {host} nor a DNS name: curl will refuse it)"
        return base_url, options, note
    name = "localhost" if "localhost" in usable else usable[0]
    address = f"[{host}]" if ":" in host else host
    options += ["--resolve", f"{name}:{port}:{address}"]
    return f"https://{name}:{port}", options, ""


def curl_command(base_url: str, path: str, web_config: WebConfig | None) -> tuple[str, str]:
    """``curl -s ... URL`` for ``path`` of the exporter at ``base_url``, and a note (or "").

    With basic auth the command has ``-u USER`` and curl asks for the password (never printed).
    """
    options = ["-s"]
    note = ""
    if web_config is not None:
        tls = web_config.tls_server_config
        if base_url.startswith("https://") and tls.cert_file is not None:
            base_url, tls_options, note = https_options(base_url, tls.cert_file)
            options += tls_options
            if tls.client_auth_type in ("RequireAndVerifyClientCert", "RequireAnyClientCert"):
                options += ["--cert", "client.crt", "--key", "client.key"]
                note = " ".join(
                    filter(None, [note, "(client.crt/.key: a client certificate of your CA)"])
                )
        if web_config.auth_required_for(path):
            options += ["-u", sorted(web_config.basic_auth_users)[0]]
            note = " ".join(filter(None, [note, "(curl asks for the password)"]))
    return shlex.join(["curl", *options, base_url + path]), note


def instructions(
    exporter_url: str,
    telemetry_path: str,
    simulator_url: str,
    *,
    web_config: WebConfig | None = None,
    profile: str = DEMO_PROFILE,
) -> str:
    """What the user reads when the demo is up."""
    metrics_url = exporter_url + telemetry_path
    curl, note = curl_command(exporter_url, telemetry_path, web_config)
    notes = f"  {note}\n" if note else ""
    return f"""
Demo running: the exporter reads a simulated Cloud Assistant API
({", ".join(DEMO_REGIONS)}; workload profile {profile!r}).
The demo refreshes every {DEMO_REFRESH_SECONDS} s by itself, so the landing page moves on its
own; a production exporter refreshes when Prometheus scrapes it.

  Exporter:   {exporter_url}/
  Metrics:    {metrics_url}
  Simulator:  {simulator_url}  (the fake ECS API; it only answers signed requests)

Try:
  {curl} | grep '^aliyun_cloudassistant_invocation_results{{'
  {curl} | grep finished_total | grep -v ' 0.0$'
{notes}
Next: `make demo-stack` adds Prometheus with the project's alert rules and Alertmanager.
Press Ctrl-C to stop.
"""


def unknown_profile(profile: str) -> str | None:
    """The one-line problem with a ``--demo.profile`` value, or None when it is known."""
    if profile in PROFILES:
        return None
    return f"--demo.profile: unknown profile {profile!r}; choose one of {', '.join(DEMO_PROFILES)}"


def run_demo(
    *,
    listen_address: tuple[str, int],
    telemetry_path: str = "/metrics",
    web_config: WebConfig | None = None,
    profile: str = DEMO_PROFILE,
    out: TextIO | None = None,
) -> int:
    """Start the simulator and serve the exporter against it until Ctrl-C; the exit code."""
    stream = out if out is not None else sys.stdout
    simulator = start_simulator(profile=profile)
    ticker_stop = threading.Event()
    tickers: list[threading.Thread] = []
    try:
        settings = demo_settings(simulator.url)
        application = build_application(settings)

        def announce(server: ExporterHTTPServer) -> None:
            url = server.url.replace("://0.0.0.0:", "://127.0.0.1:").replace(
                "://[::]:", "://[::1]:"
            )
            tickers.append(keep_refreshing(application, ticker_stop))
            text = instructions(
                url, telemetry_path, simulator.url, web_config=web_config, profile=profile
            )
            print(text, file=stream, flush=True)

        return serve(
            application,
            listen_address=listen_address,
            telemetry_path=telemetry_path,
            web_config=web_config,
            on_listening=announce,
        )
    finally:
        ticker_stop.set()
        for ticker in tickers:
            ticker.join()
        simulator.close()
