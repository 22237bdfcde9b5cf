"""Command-line flags, Prometheus style; everything else is in ``settings`` and ``app``.

Exit codes: 0 after a clean shutdown or a good ``--config.check``; 2 for a bad flag, a bad
config file, a bad environment or a bad web config (``PROGRAM: error: <reason>``, one line per
problem, the same at start-up and under ``--config.check``, never a traceback); 1 when the
listen address cannot be bound.

``--config.check`` runs :func:`prepare`, exactly what a start runs before it listens (config,
web config with its TLS files, credentials providers, clients: everything but the network),
so a configuration that passes the check does not fail at start.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NoReturn, TypeVar

from exporter import __version__
from exporter.allocator import tune_allocator
from exporter.app import Application, build_application, serve
from exporter.connections import ConnectionLimits
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
from exporter.reload import Reloader, ReloadError
from exporter.server import normalize_route_prefix, route_prefix_of
from exporter.settings import (
    SECRET_VARIABLES,
    ConfigError,
    ExporterSettings,
    load_settings,
    variables_help,
)
from exporter.sharding import Sharding, ShardingError, sharding_from_flags
from exporter.signals import SignalInbox
from exporter.state import StateError, StateStore
from exporter.validation import did_you_mean, has_dot_segment, shown_value
from exporter.webconfig import WebConfig, WebConfigError, load_web_config
from exporter.webwatch import WebConfigSource

PROGRAM: Final = "aliyun-cloudassistant-exporter"
DEFAULT_LISTEN_ADDRESS: Final = ":9907"
DEFAULT_DEMO_LISTEN_ADDRESS: Final = "127.0.0.1:9907"
DEFAULT_STORAGE_PATH: Final = "data/"
EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
EXIT_INTERRUPTED: Final = 130

log = logging.getLogger("exporter")
_T = TypeVar("_T")


def parse_listen_address(value: str) -> tuple[str, int]:
    """``host:port``, ``:port`` (every interface) or ``[v6]:port`` -> ``(host, port)``."""
    shown = shown_value(value)
    host, sep, port_text = value.rpartition(":")
    if not sep:
        raise argparse.ArgumentTypeError(f"{shown} is not host:port (e.g. :9907)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise argparse.ArgumentTypeError(f"{shown}: write an IPv6 address as [addr]:port")
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{shown}: the port must be a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{shown}: the port must be between 0 and 65535")
    try:
        host.encode("idna")  # what the socket layer does with a name; a bad one is a bad flag
    except UnicodeError:
        raise argparse.ArgumentTypeError(
            f"{shown}: {shown_value(host)} is not a valid host name"
        ) from None
    return (host or "0.0.0.0", port)


def parse_telemetry_path(value: str) -> str:
    """A path starting with ``/`` that does not hide the landing page or health endpoints."""
    if (
        not value.startswith("/")
        or value == "/"
        or value.startswith("/-/")
        or "?" in value
        or has_dot_segment(value)
    ):
        raise argparse.ArgumentTypeError(
            f"{shown_value(value)} must be a path like /metrics "
            "(not /, /-/..., with a query, or with a . or .. segment)"
        )
    return value


_MAX_COUNT_DIGITS = 9  # more is a typo, and Python refuses int() of over 4,300 digits


def parse_count(value: str, what: str = "a whole number, 0 or more") -> int:
    """A whole number, 0 or more (``--shard``); ``what`` words the error."""
    if not value.isascii() or not value.isdigit():
        raise ValueError(f"{shown_value(value)} must be {what}")
    if len(value.lstrip("0")) > _MAX_COUNT_DIGITS:
        raise ValueError(f"{value[:20]!r}... is too large ({len(value)} digits)")
    return int(value)


def parse_total_shards(value: str) -> int:
    """``--total-shards``: a whole number, at least 1 (0 is refused with the shard bounds)."""
    return parse_count(value, "a whole number of shards, at least 1")


def parse_max_connections(value: str) -> int:
    """A whole number of connections, at least 1."""
    try:
        count = parse_count(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"{shown_value(value)} must be a whole number of connections, at least 1")
    return count


def _checked(parse: Callable[[str], _T]) -> Callable[[str], _T]:
    """``parse`` as an argparse type: its ``ValueError`` becomes a one-line usage error."""

    def checked(value: str) -> _T:
        try:
            return parse(value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return checked


class _Parser(argparse.ArgumentParser):
    """``argparse`` with a did-you-mean for a misspelt flag (``--web.listen-adress``)."""

    def error(self, message: str) -> NoReturn:
        prefix = "unrecognized arguments: "
        if message.startswith(prefix):
            known = [option for action in self._actions for option in action.option_strings]
            hints = []
            for word in message.removeprefix(prefix).split():
                flag = word.partition("=")[0]
                if not flag.startswith("-") or len(flag) < 3:
                    continue  # a value, or a short flag
                # -config.file (one dash, as Go's flag package has it) is --config.file here.
                close = did_you_mean(flag if flag.startswith("--") else f"-{flag}", known)
                if close:
                    hints.append(f"{flag}: did you mean {close}?")
            if hints:
                message = f"{message} ({'; '.join(hints)})"
        super().error(message)


def build_parser() -> argparse.ArgumentParser:
    """The flags; see ``--help``."""
    parser = _Parser(
        prog=PROGRAM,
        description="Prometheus exporter for Alibaba Cloud ECS Cloud Assistant invocation results.",
        epilog=variables_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )
    _add_web_flags(parser)
    _add_config_flags(parser)
    _add_log_flags(parser)
    _add_shard_flags(parser)
    parser.add_argument(
        "--storage.path",
        dest="storage_path",
        default=DEFAULT_STORAGE_PATH,
        metavar="DIR",
        help=(
            "directory for the state that lets counters resume after a restart, counting "
            f'every run once (default {DEFAULT_STORAGE_PATH}; "" turns persistence off)'
        ),
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


def _add_web_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--web.listen-address",
        dest="listen_addresses",
        action="append",
        type=parse_listen_address,
        metavar="ADDRESS",
        help=(
            "address to listen on, host:port, [v6]:port or :port (every address, IPv4 and "
            f"IPv6); repeat it to listen on several (default {DEFAULT_LISTEN_ADDRESS}; "
            f"{DEFAULT_DEMO_LISTEN_ADDRESS} with --demo)"
        ),
    )
    parser.add_argument(
        "--web.systemd-socket",
        dest="systemd_socket",
        action="store_true",
        help="listen on the sockets systemd passes (socket activation) instead of addresses",
    )
    parser.add_argument(
        "--web.external-url",
        dest="external_url",
        type=_checked(route_prefix_of),
        metavar="URL",
        help="the URL users reach the exporter at (behind a reverse proxy); its path is the "
        "default route prefix",
    )
    parser.add_argument(
        "--web.route-prefix",
        dest="route_prefix",
        type=_checked(normalize_route_prefix),
        metavar="PATH",
        help="prefix of every route (default: the path of --web.external-url, or none)",
    )
    parser.add_argument(
        "--web.max-connections",
        dest="max_connections",
        type=_checked(parse_max_connections),
        default=ConnectionLimits.max_connections,
        metavar="N",
        help="open HTTP connections at most; beyond, idle ones are closed first "
        f"(default {ConnectionLimits.max_connections}, lowered to fit the open-files limit)",
    )
    parser.add_argument(
        "--web.disable-exporter-metrics",
        dest="disable_exporter_metrics",
        action="store_true",
        help="leave out the process_* and python_* metrics about the exporter itself",
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
        help="exporter-toolkit web config: TLS and basic auth (re-read when its files change)",
    )
    parser.add_argument(
        "--web.enable-lifecycle",
        dest="enable_lifecycle",
        action="store_true",
        help="reload the configuration on POST or PUT /-/reload, as SIGHUP does",
    )


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
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
        help=(
            "validate the configuration and the web config as a start would (without "
            "network), print a summary of the targets and exit"
        ),
    )


def _add_log_flags(parser: argparse.ArgumentParser) -> None:
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


def _add_shard_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--shard",
        type=_checked(parse_count),
        metavar="N",
        help="this exporter's shard, counted from 0: it refreshes and exports only the targets "
        "it owns (each target is owned by exactly one shard; needs --total-shards)",
    )
    parser.add_argument(
        "--total-shards",
        dest="total_shards",
        type=_checked(parse_total_shards),
        metavar="N",
        help="the number of shards the targets are split between (default 1: no sharding); "
        "every shard gets the same config and the same --total-shards",
    )
    parser.add_argument(
        "--pod",
        metavar="NAME",
        help="the name of this StatefulSet pod (e.g. --pod=$(POD_NAME)): its ordinal suffix "
        "is the shard (instead of --shard)",
    )


def _default_address(*, demo: bool) -> tuple[str, int]:
    return parse_listen_address(DEFAULT_DEMO_LISTEN_ADDRESS if demo else DEFAULT_LISTEN_ADDRESS)


def _route_prefix(args: argparse.Namespace) -> str:
    """``--web.route-prefix``, else the path of ``--web.external-url``, as Prometheus has it."""
    if args.route_prefix is not None:
        return str(args.route_prefix)
    return str(args.external_url or "")


class StartupError(Exception):
    """The exporter cannot start with this configuration; ``str()`` is the one-line reason."""


@dataclass
class Prepared:
    """Everything a start builds before it listens."""

    source: str
    settings: ExporterSettings
    web_config: WebConfig | None
    application: Application
    doubts: list[str] = field(default_factory=list)


def prepare(
    config_file: Path | None,
    web_config_file: Path | None,
    environ: Mapping[str, str],
    storage_path: str = "",
    *,
    exporter_metrics: bool = True,
    sharding: Sharding | None = None,
) -> Prepared:
    """Load and check everything a start needs, and build the application (not started).

    ``storage_path`` is the state directory ("": no persistence); ``--config.check`` passes ""
    (the directory belongs to the running exporter, which holds its lock). Raises
    :class:`StartupError`. The caller closes ``application``. Without ``exporter_metrics``
    (``--web.disable-exporter-metrics``) the application leaves out the process and platform
    metrics; with ``sharding`` it builds only the targets this shard owns.
    """
    try:
        web_config = load_web_config(web_config_file) if web_config_file is not None else None
        if web_config is not None:
            web_config.ssl_context()  # the TLS files as they are now
    except WebConfigError as exc:
        raise StartupError(str(exc)) from None
    settings = _load_settings(config_file)
    REDACTOR.add_all(settings.secret_values())
    REDACTOR.add_all(environ.get(name, "") for name in SECRET_VARIABLES)
    state = open_state(storage_path)
    try:
        application = build_application(
            settings,
            environ=environ,
            exporter_metrics=exporter_metrics,
            state=state,
            sharding=sharding or Sharding(),
        )
    except (ValueError, EcsError) as exc:  # what validation let through but a constructor refused
        if state is not None:
            state.close()
        raise StartupError(str(exc)) from None
    except BaseException:
        if state is not None:
            state.close()
        raise
    source = str(config_file) if config_file is not None else "environment"
    return Prepared(source, settings, web_config, application, settings.warnings(environ))


def _load_settings(config_file: Path | None) -> ExporterSettings:
    try:
        return load_settings(config_file)
    except ConfigError as exc:
        hint = "" if config_file is not None else " (or give --config.file)"
        raise StartupError(f"{exc}{hint}") from None


def reloader_for(
    application: Application, config_file: Path | None, web_config: WebConfigSource
) -> Reloader:
    """Reloads of the config file and the web config into the running ``application``.

    A reload refuses what a start refuses, with the same words.
    """

    def load() -> Callable[[], str]:
        try:
            settings = _load_settings(config_file)
            loaded = web_config.load()
        except (StartupError, WebConfigError) as exc:
            raise ReloadError(str(exc)) from None

        def apply() -> str:
            REDACTOR.add_all(settings.secret_values())
            try:
                summary = application.reconfigure(settings)
            except (ValueError, EcsError) as exc:
                raise ReloadError(str(exc)) from None
            web_config.replace(loaded)
            return summary

        return apply

    return Reloader(load, application.reload_status)


def open_state(storage_path: str) -> StateStore | None:
    """The state directory, created and locked; None when ``storage_path`` is ""."""
    if not storage_path:
        return None
    try:
        return StateStore(Path(storage_path))
    except StateError as exc:
        raise StartupError(f"--storage.path: {exc}") from None


def _config_failure(error: Exception) -> int:
    # The same line at start-up and under --config.check: what the README shows.
    print(f"{PROGRAM}: error: {error}", file=sys.stderr)
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


def _check_demo_flags(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    if args.demo and (args.config_file is not None or args.config_check):
        parser.error("--demo cannot be combined with --config.file or --config.check")
    if args.demo and (args.shard, args.total_shards, args.pod) != (None, None, None):
        parser.error("--demo cannot be combined with --shard, --total-shards or --pod")
    if args.demo_profile is not None and not args.demo:
        parser.error("--demo.profile needs --demo")


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_demo_flags(args, parser)
    tune_allocator(os.environ)  # before any thread allocates: see exporter/allocator.py
    configure_logging(args.log_level, args.log_format)
    log_uncaught_exceptions()

    if args.demo:
        return _run_demo(args, parser)
    # From now on no signal ends the process without a word: they wait for the serving loop.
    signals = SignalInbox()
    if not args.config_check:
        signals.install()
    try:
        sharding = sharding_from_flags(args.shard, args.total_shards, args.pod)
    except ShardingError as exc:
        return _config_failure(exc)
    try:
        prepared = prepare(
            args.config_file,
            args.web_config_file,
            os.environ,
            "" if args.config_check else args.storage_path,
            exporter_metrics=not args.disable_exporter_metrics,
            sharding=sharding,
        )
    except StartupError as exc:
        return _config_failure(exc)

    if args.config_check:
        prepared.application.close()
        print(f"{prepared.source}: OK: {prepared.settings.summary()}")
        if sharding.enabled:
            print(f"{prepared.source}: {prepared.application.shard_summary()}")
        for doubt in prepared.doubts:
            print(f"{PROGRAM}: warning: {doubt}", file=sys.stderr)
        return EXIT_OK
    for doubt in prepared.doubts:
        log.warning("configuration looks wrong", extra={"problem": doubt})
    if sharding.enabled and not prepared.application.targets:
        # Legitimate with more shards than targets, but worth a look when it is a surprise.
        log.warning(
            "this shard owns no target", extra={"shard": prepared.application.shard_summary()}
        )
    # Everything built so far lives as long as the process: moving it out of the collector's
    # generations spares the full collections the first refresh would otherwise trigger.
    gc.collect()
    gc.freeze()
    try:
        web_config = WebConfigSource(prepared.web_config, args.web_config_file)
        reloader = reloader_for(prepared.application, args.config_file, web_config)
        return serve(
            prepared.application,
            listen_addresses=args.listen_addresses or [_default_address(demo=False)],
            systemd_socket=args.systemd_socket,
            route_prefix=_route_prefix(args),
            limits=ConnectionLimits(max_connections=args.max_connections),
            telemetry_path=args.telemetry_path,
            web_config_source=web_config,
            reload=reloader.reload,
            lifecycle=args.enable_lifecycle,
            signals=signals,
        )
    except WebConfigError as exc:  # a TLS file that stopped loading since validation
        prepared.application.close()
        return _config_failure(exc)


def _run_demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    # The simulator is only imported for the demo.
    from exporter.demo import DEMO_PROFILE, run_demo, unknown_profile

    profile = args.demo_profile or DEMO_PROFILE
    problem = unknown_profile(profile)
    if problem is not None:
        parser.error(problem)
    try:
        web_config = load_web_config(args.web_config_file) if args.web_config_file else None
    except WebConfigError as exc:
        return _config_failure(exc)
    return run_demo(
        listen_address=(args.listen_addresses or [_default_address(demo=True)])[0],
        telemetry_path=args.telemetry_path,
        web_config=web_config,
        profile=profile,
    )


if __name__ == "__main__":
    sys.exit(main())
