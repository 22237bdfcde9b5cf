"""``python -m exporter.simulator``: run the ECS API simulator on a loopback address.

Prints the URL and the credentials to use, serves until SIGINT/SIGTERM, then stops cleanly.
Bad flags end with a one-line error and exit status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from exporter.simulator.faults import ALL_FAULT_KINDS, FaultPlan, FaultRule, parse_fault_rule
from exporter.simulator.server import DEFAULT_REGIONS, ORDERS, Account, SimulatorServer
from exporter.simulator.world import PROFILES, WallClock, World, spec_with

DEFAULT_ACCESS_KEY_ID = "simulator-access-key-id"
DEFAULT_ACCESS_KEY_SECRET = "simulator-access-key-secret"
MAX_BACKLOG = 1_000_000
MAX_CLOCK_OFFSET = 30 * 86_400.0  # a month: past that the API's retention makes no sense
MAX_TIME_RESOLUTION = 86_400.0


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {port_text!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is out of range")
    host = host.strip("[]")
    try:
        host.encode("idna")  # what the socket layer does with a name
    except UnicodeError:
        raise argparse.ArgumentTypeError(f"{host!r} is not a valid host name") from None
    return host, port


def _fault_rule(text: str) -> FaultRule:
    try:
        return parse_fault_rule(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def _non_negative(text: str) -> float:
    value = _number(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be a finite number, not negative")
    return value


def _offset(text: str) -> float:
    value = _number(text)
    if not math.isfinite(value) or abs(value) > MAX_CLOCK_OFFSET:
        raise argparse.ArgumentTypeError(
            f"{text} must be between -{MAX_CLOCK_OFFSET:.0f} and {MAX_CLOCK_OFFSET:.0f} seconds"
        )
    return value


def _resolution(text: str) -> float:
    value = _non_negative(text)
    if not 1 <= value <= MAX_TIME_RESOLUTION:
        raise argparse.ArgumentTypeError(
            f"{text} must be between 1 and {MAX_TIME_RESOLUTION:.0f} seconds"
        )
    return value


def _backlog(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    # Generating the records takes memory and time in proportion; the API keeps 10,000 in view.
    if not 0 <= value <= MAX_BACKLOG:
        raise argparse.ArgumentTypeError(f"{text} must be between 0 and {MAX_BACKLOG}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.simulator",
        description="Simulated ECS API (DescribeInvocationResults) with a moving, seeded workload.",
    )
    parser.add_argument(
        "--listen", type=_listen_address, default=("127.0.0.1", 0), help="HOST:PORT (port 0: any)"
    )
    parser.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    parser.add_argument(
        "--profile", choices=sorted(PROFILES), default="demo", help="workload (default demo)"
    )
    parser.add_argument("--backlog", type=_backlog, help="finished records generated at start")
    parser.add_argument(
        "--order",
        choices=ORDERS,
        default="newest",
        help="result order; unstable: equal coarse keys in a new order on every call",
    )
    parser.add_argument(
        "--clock-offset",
        type=_offset,
        default=0.0,
        metavar="SECONDS",
        help="the API's clock ahead of the host's (negative: behind): result times and Date",
    )
    parser.add_argument(
        "--time-resolution",
        type=_resolution,
        default=1.0,
        metavar="SECONDS",
        help="result times cut to whole multiples (60: whole minutes; default 1)",
    )
    parser.add_argument("--access-key-id", default=DEFAULT_ACCESS_KEY_ID)
    parser.add_argument("--access-key-secret", default=None, help="default: a fixed demo secret")
    parser.add_argument(
        "--sts-access-key-id",
        action="append",
        default=[],
        metavar="ID",
        help="also accept this key id (same secret) with any non-empty STS token",
    )
    parser.add_argument(
        "--region",
        action="append",
        default=None,
        metavar="REGION",
        help=f"known region (repeatable; default {', '.join(DEFAULT_REGIONS)})",
    )
    parser.add_argument(
        "--faults",
        type=_fault_rule,
        action="append",
        default=[],
        metavar="KIND[,n=N][,p=P][,key=ID][,region=R][,page=N][,retry_after=MS|none][,delay=S]",
        help=f"inject a fault (repeatable); kinds: {', '.join(ALL_FAULT_KINDS)}",
    )
    parser.add_argument(
        "--latency", type=_non_negative, default=0.0, help="seconds added to every answer"
    )
    parser.add_argument(
        "--token-ttl", type=_non_negative, default=600.0, help="NextToken lifetime (s)"
    )
    return parser


def build_server(args: argparse.Namespace, world: World) -> SimulatorServer:
    """The server the parsed flags ask for, over ``world`` (not started; raises ``OSError``
    when it cannot listen)."""
    secret = args.access_key_secret or DEFAULT_ACCESS_KEY_SECRET
    accounts: dict[str, str | Account] = {args.access_key_id: secret}
    for sts_id in args.sts_access_key_id:
        accounts[sts_id] = Account(secret, sts=True)
    host, port = args.listen
    return SimulatorServer(
        world,
        accounts=accounts,
        faults=FaultPlan(args.faults, seed=args.seed, latency=args.latency),
        order=args.order,
        regions=args.region,
        host=host,
        port=port,
        token_ttl=args.token_ttl,
        seed=args.seed,
        clock_offset=args.clock_offset,
        time_resolution=args.time_resolution,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    changes = {} if args.backlog is None else {"backlog": args.backlog}
    try:
        spec = spec_with(args.profile, **changes)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    secret = args.access_key_secret or DEFAULT_ACCESS_KEY_SECRET
    world = World(args.seed, WallClock(), spec)
    host, port = args.listen
    try:
        server = build_server(args, world)
    except OSError as exc:
        print(f"error: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with server:
        shown_secret = secret if args.access_key_secret is None else "(the one you passed)"
        print(f"ECS API simulator listening on {server.url}", flush=True)
        # The exporter's endpoint names its scheme (without one, https is assumed); the
        # official SDK takes host:port and the protocol apart.
        print(f"  endpoint:          {server.url}")
        print(f"  SDK endpoint:      {server.endpoint} (protocol http)")
        print(f"  profile:           {args.profile} (seed {args.seed}, order {args.order})")
        print(f"  regions:           {', '.join(server.regions)}")
        if args.clock_offset or args.time_resolution != 1:
            print(
                f"  API clock:         {args.clock_offset:+g} s from the host's, "
                f"times in whole {args.time_resolution:g} s"
            )
        for rule in args.faults:
            print(f"  fault:             {_describe_rule(rule)}")
        print(f"  access key id:     {args.access_key_id}")
        print(f"  access key secret: {shown_secret}", flush=True)
        while not stop.wait(0.5):
            pass
    print("simulator stopped", flush=True)
    return 0


def _describe_rule(rule: FaultRule) -> str:
    when = (
        f"next {rule.count} calls"
        if rule.count is not None
        else f"{rule.probability:.0%} of calls"
        if rule.probability is not None
        else "every call"
    )
    where = "" if rule.page is None else f" at page {rule.page}"
    return f"{rule.kind}, {when}{where}"


if __name__ == "__main__":
    sys.exit(main())
