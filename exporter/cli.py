"""Command-line flags, Prometheus style; everything else is in ``settings`` and ``app``.

Exit codes: 0 after a clean shutdown or a good ``--config.check``; 2 for a bad flag, a bad
config file, a bad environment or a bad web config (a one-line reason, never a traceback);
1 when the listen address cannot be bound.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from exporter import __version__
from exporter.app import build_application, serve
from exporter.ecs.errors import EcsError
from exporter.logs import (
    LOG_FORMATS,
    LOG_LEVELS,
    REDACTOR,
    JsonFormatter,
    LogfmtFormatter,
    configure_logging,
    describe_exception,
    log_uncaught_exceptions,
)
from exporter.settings import (
    MAX_CONFIG_FILE_BYTES,
    ConfigError,
    ExporterSettings,
    load_settings,
)
from exporter.webconfig import WebConfig, WebConfigError, load_web_config

PROGRAM: Final = "aliyun-cloudassistant-exporter"
DEFAULT_LISTEN_ADDRESS: Final = ":9907"
DEFAULT_DEMO_LISTEN_ADDRESS: Final = "127.0.0.1:9907"
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130
# Secrets the environment-reading credential sources will use, for the log redactor.
_SECRET_VARIABLES: Final = ("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN")

log = logging.getLogger("exporter")


def parse_listen_address(value: str) -> tuple[str, int]:
    """``host:port``, ``:port`` (every interface) or ``[v6]:port`` -> ``(host, port)``."""
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{value!r} is not host:port (e.g. :9907)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError(f"{value!r}: write an IPv6 address as [addr]:port")
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r}: the port must be between 0 and 65535")
    try:
        host.encode("idna")  # what the socket layer does with a name; a bad one is a bad flag
    except UnicodeError:
        raise argparse.ArgumentTypeError(f"{value!r}: {host!r} is not a valid host name") from None
    return (host or "0.0.0.0", port)


def parse_telemetry_path(value: str) -> str:
    """A path starting with ``/`` that does not hide the landing page or health endpoints."""
    if not value.startswith("/") or value == "/" or value.startswith("/-/") or "?" in value:
        raise argparse.ArgumentTypeError(
            f"{value!r} must be a path like /metrics (not /, /-/..., or with a query)"
        )
    return value


def build_parser() -> argparse.ArgumentParser:
    """The flags; see ``--help``."""
    parser = argparse.ArgumentParser(
        prog=PROGRAM,
        description="Prometheus exporter for Alibaba Cloud ECS Cloud Assistant invocation results.",
        epilog=(
            "Without --config.file, one account is read from the environment: "
            "ALIYUN_CLOUDASSISTANT_REGIONS (comma-separated, required), "
            "ALIYUN_CLOUDASSISTANT_ACCOUNT, ALIYUN_CLOUDASSISTANT_ENDPOINT and "
            "ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET / "
            "ALIBABA_CLOUD_SECURITY_TOKEN (or the default credentials chain)."
        ),
        allow_abbrev=False,
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        type=parse_listen_address,
        metavar="ADDRESS",
        help=(
            f"address to listen on, host:port or :port (default {DEFAULT_LISTEN_ADDRESS}; "
            f"{DEFAULT_DEMO_LISTEN_ADDRESS} with --demo)"
        ),
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        type=parse_telemetry_path,
        default="/metrics",
        metavar="PATH",
        help="path under which to expose metrics (default /metrics)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        type=Path,
        metavar="FILE",
        help="exporter-toolkit web config: TLS and basic auth",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        type=Path,
        metavar="FILE",
        help="YAML file listing the targets (default: one account from the environment)",
    )
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration, print a summary of the targets and exit",
    )
    parser.add_argument(
        "--log.level",
        dest="log_level",
        choices=LOG_LEVELS,
        default="info",
        help="only log messages with the given severity or above (default info)",
    )
    parser.add_argument(
        "--log.format",
        dest="log_format",
        choices=LOG_FORMATS,
        default="logfmt",
        help="output format of log messages (default logfmt)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="start the built-in API simulator with a lively workload and export it",
    )
    parser.add_argument(
        "--demo.profile",
        dest="demo_profile",
        metavar="NAME",
        help="with --demo: the simulator's workload (demo, steady, bench, quiet; default demo)",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"{PROGRAM} {__version__} (python {platform.python_version()})",
    )
    return parser


def _load_web_config(path: Path | None) -> WebConfig | None:
    if path is None:
        return None
    try:
        status = path.stat()
    except OSError:
        pass  # load_web_config names the problem (missing, permission denied ...)
    else:
        # A FIFO or a device (/dev/zero) would block start-up or be read forever.
        if not (stat.S_ISREG(status.st_mode) or stat.S_ISDIR(status.st_mode)):
            raise WebConfigError(f"web config {path}: is not a regular file")
        if status.st_size > MAX_CONFIG_FILE_BYTES:
            raise WebConfigError(f"web config {path}: is larger than {MAX_CONFIG_FILE_BYTES} bytes")
    try:
        return load_web_config(path)
    except RecursionError:  # thousands of nested [ or {: PyYAML's composer recurses
        raise WebConfigError(f"web config {path}: not valid YAML: nested too deeply") from None


def _config_failure(error: Exception, *, check: bool, hint: str = "") -> int:
    message = f"{error}{hint}"
    if check:
        print(f"{PROGRAM}: error: {message}", file=sys.stderr)
    else:
        log.error("invalid configuration", extra={"err": message})
    return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter; returns the process exit code.

    An unexpected exception (a bug) ends the process with exit code 1 and one log line naming
    the exception and where it was raised, never a traceback.
    """
    try:
        return _run(argv)
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers are in place
        return EXIT_INTERRUPTED
    except Exception as exc:
        _report_unexpected(exc)
        return EXIT_FAILURE


def _report_unexpected(exc: Exception) -> None:
    configured = any(
        isinstance(handler.formatter, LogfmtFormatter | JsonFormatter)
        for handler in logging.getLogger().handlers
    )
    if configured:
        log.error("unexpected error", extra={"err": describe_exception(exc)})
    else:  # before logging is configured (e.g. while parsing flags)
        print(f"{PROGRAM}: unexpected error: {describe_exception(exc)}", file=sys.stderr)


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.demo and (args.config_file is not None or args.config_check):
        parser.error("--demo cannot be combined with --config.file or --config.check")
    if args.demo_profile is not None and not args.demo:
        parser.error("--demo.profile needs --demo")
    configure_logging(args.log_level, args.log_format)
    log_uncaught_exceptions()

    try:
        web_config = _load_web_config(args.web_config_file)
    except WebConfigError as exc:
        return _config_failure(exc, check=args.config_check)

    if args.demo:
        from exporter.demo import DEMO_PROFILE, run_demo, unknown_profile  # only for the demo

        profile = args.demo_profile or DEMO_PROFILE
        problem = unknown_profile(profile)
        if problem is not None:
            parser.error(problem)
        return run_demo(
            listen_address=args.listen_address or parse_listen_address(DEFAULT_DEMO_LISTEN_ADDRESS),
            telemetry_path=args.telemetry_path,
            web_config=web_config,
            profile=profile,
        )

    try:
        settings: ExporterSettings = load_settings(args.config_file)
    except ConfigError as exc:
        hint = "" if args.config_file is not None else " (or give --config.file)"
        return _config_failure(exc, check=args.config_check, hint=hint)

    doubts = settings.warnings(os.environ)
    if args.config_check:
        source = args.config_file if args.config_file is not None else "environment"
        print(f"{source}: OK: {settings.summary()}")
        for doubt in doubts:
            print(f"{PROGRAM}: warning: {doubt}", file=sys.stderr)
        return EXIT_OK
    for doubt in doubts:
        log.warning("configuration looks wrong", extra={"problem": doubt})

    REDACTOR.add_all(settings.secret_values())
    REDACTOR.add_all(os.environ.get(name, "") for name in _SECRET_VARIABLES)
    try:
        application = build_application(settings)
    except (ValueError, EcsError) as exc:  # what validation let through but a constructor refused
        return _config_failure(exc, check=False)
    # Everything built so far lives as long as the process: moving it out of the collector's
    # generations spares the full collections the first refresh would otherwise trigger.
    gc.collect()
    gc.freeze()
    try:
        return serve(
            application,
            listen_address=args.listen_address or parse_listen_address(DEFAULT_LISTEN_ADDRESS),
            telemetry_path=args.telemetry_path,
            web_config=web_config,
        )
    except WebConfigError as exc:  # a TLS file that stopped loading since validation
        return _config_failure(exc, check=False)


if __name__ == "__main__":
    sys.exit(main())
