"""Listening sockets: bound from ``host:port`` addresses, or handed over by systemd.

Addresses follow Go's ``net.Listen``, as exporter-toolkit's ``--web.listen-address`` does:

* an empty or unspecified host (``:9907``, ``0.0.0.0:9907``, ``[::]:9907``) listens on every
  address of both families: one dual-stack IPv6 socket where the host has IPv6, IPv4 alone
  where it has not;
* an IPv6 literal (``[::1]:9907``) listens on that address only (``IPV6_V6ONLY``);
* an IPv4 literal or a name listens on the first address the name resolves to (IPv4 first).

``--web.systemd-socket`` takes the sockets systemd passes (socket activation: ``LISTEN_FDS``
file descriptors from 3, for the process ``LISTEN_PID``) instead of binding any.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import MutableMapping, Sequence
from typing import Final

# The kernel caps it at net.core.somaxconn. A short backlog makes the kernel drop the SYNs of a
# burst of connections (an HA pair, a flood) and clients then wait a second or more for their
# retransmission.
LISTEN_BACKLOG: Final = 1024
# The first file descriptor systemd passes (SD_LISTEN_FDS_START).
SYSTEMD_FIRST_FD: Final = 3
_UNSPECIFIED_HOSTS: Final = frozenset({"", "0.0.0.0", "::"})
# Errors that mean "this host has no usable IPv6", where the dual-stack socket falls back to IPv4.
_NO_IPV6_ERRORS: Final = frozenset({errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT})


class ListenError(Exception):
    """A listening socket could not be had: ``address`` (or ``systemd``) and ``reason``."""

    def __init__(self, reason: str, *, address: str = "systemd") -> None:
        super().__init__(f"{address}: {reason}")
        self.address = address
        self.reason = reason


def format_address(address: tuple[str, int]) -> str:
    """``host:port``, ``[v6]:port``, ``:port`` for messages."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind(address: tuple[str, int]) -> socket.socket:
    """A listening socket for ``address`` (see the module docstring); raises ``OSError``."""
    host, port = address
    if host in _UNSPECIFIED_HOSTS:
        if socket.has_dualstack_ipv6():
            try:
                return socket.create_server(
                    ("::", port),
                    family=socket.AF_INET6,
                    backlog=LISTEN_BACKLOG,
                    dualstack_ipv6=True,
                )
            except OSError as exc:
                if exc.errno not in _NO_IPV6_ERRORS:
                    raise
        return socket.create_server(("0.0.0.0", port), backlog=LISTEN_BACKLOG)
    if ":" in host:
        return socket.create_server((host, port), family=socket.AF_INET6, backlog=LISTEN_BACKLOG)
    candidates = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    # IPv4 first, as Go does for a name.
    candidates.sort(key=lambda info: info[0] != socket.AF_INET)
    family, _, _, _, sockaddr = candidates[0]
    return socket.create_server(sockaddr[:2], family=family, backlog=LISTEN_BACKLOG)


def bind_all(addresses: Sequence[tuple[str, int]]) -> list[socket.socket]:
    """One listening socket per address; on the first failure, close the others and raise
    ``ListenError`` naming the address."""
    sockets: list[socket.socket] = []
    try:
        for address in addresses:
            try:
                sockets.append(bind(address))
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise ListenError(reason, address=format_address(address)) from None
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def systemd_sockets(environ: MutableMapping[str, str] | None = None) -> list[socket.socket]:
    """The listening sockets systemd passed to this process, as ``sd_listen_fds`` finds them.

    The ``LISTEN_*`` variables are removed from ``environ`` (``os.environ`` by default), so
    that no child process takes the sockets for its own. Raises ``ListenError`` when none were
    passed, or one is not a listening stream socket.
    """
    env = os.environ if environ is None else environ
    pid, count = env.get("LISTEN_PID", ""), env.get("LISTEN_FDS", "")
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(name, None)
    if not count or pid != str(os.getpid()):
        raise ListenError(
            "--web.systemd-socket: systemd passed no socket to this process "
            "(LISTEN_FDS and LISTEN_PID are not set for it: is there a .socket unit?)"
        )
    try:
        number = int(count)
    except ValueError:
        raise ListenError(f"--web.systemd-socket: LISTEN_FDS={count!r} is not a number") from None
    if not 0 < number <= 64:
        raise ListenError(f"--web.systemd-socket: LISTEN_FDS={count!r} is out of range")
    sockets: list[socket.socket] = []
    try:
        for fd in range(SYSTEMD_FIRST_FD, SYSTEMD_FIRST_FD + number):
            os.set_inheritable(fd, False)
            sock = socket.socket(fileno=fd)
            sockets.append(sock)
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            if sock.type != socket.SOCK_STREAM or not listening:
                raise ListenError(f"--web.systemd-socket: fd {fd} is not a listening TCP socket")
    except OSError as exc:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.detach()
        raise ListenError(f"--web.systemd-socket: {exc.strerror or exc}") from None
    except BaseException:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.detach()
        raise
    return sockets
