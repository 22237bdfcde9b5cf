"""HTTP/1.1 connections, with limits: one event-loop thread holds them, worker threads answer.

Why this shape: a thread per connection let 1,500 idle clients cost 1,500 threads, and a
per-read timeout let a client sending a byte every few seconds hold one for ever. Here an idle
or slow connection costs a file descriptor and a coroutine, nothing more:

* One ``asyncio`` loop, in the thread that calls :meth:`ConnectionServer.serve_forever`,
  accepts connections, makes TLS handshakes and reads each request's line and headers.
  Only a complete request head is handed to a worker thread, so a slow client never holds
  a worker. Request bodies are never read (only GET and HEAD are served): a request
  announcing one is answered, then its connection is closed.
* Two bounded pools of daemon worker threads answer requests: one for scrapes (requests
  for the telemetry path), one for every other request, so a flood of other requests
  never delays a scrape. Threads are started when needed and end when idle.
* Limits (:class:`ConnectionLimits`): at most ``max_connections`` open connections; a new
  one beyond it closes the connection that has waited longest for a request (or whose
  request, not a scrape, still waits for a worker), or, when every connection is being
  answered, is closed at once. A request head must arrive in full within
  ``header_timeout`` (a total deadline, not per read), must fit in ``max_header_bytes``, and
  a keep-alive connection may wait ``idle_timeout`` for its next request. An answer must be
  written within ``write_timeout``.
* When the process runs out of file descriptors (``EMFILE``), accepting pauses with an
  exponential back-off (and the connection waiting longest is closed) instead of spinning.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final

from exporter.logs import describe_exception
from exporter.workers import WorkerPool

log = logging.getLogger(__name__)

# File descriptors kept back from the connection cap, for the API clients, logs and files.
RESERVED_FDS: Final = 64
# Accepting after EMFILE pauses this long at first, doubling up to the maximum.
ACCEPT_BACKOFF_SECONDS: Final = 0.05
ACCEPT_BACKOFF_MAX_SECONDS: Final = 1.0
# What one read takes from a connection (its reader buffers twice this at most).
READ_CHUNK_BYTES: Final = 16384
# What one write hands the transport of a body. Python 3.11's transports copy what the socket
# does not take at once: a body written whole made every client that reads slowly (or not at
# all) hold a copy of it until the write timeout (100 such clients of a 300-target fleet's 8 MB
# exposition took the exporter from 77 MB to 478 MB). Written a chunk at a time, each after the
# one before reached the kernel, a connection holds at most one chunk.
WRITE_CHUNK_BYTES: Final = 65536
# How long closing a TLS connection waits for the client's close_notify.
TLS_SHUTDOWN_SECONDS: Final = 2.0
# The longest request target quoted in a log line.
MAX_LOGGED_PATH: Final = 200
_OUT_OF_RESOURCES: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# Warnings about limits are logged at most this often.
_WARN_EVERY_SECONDS: Final = 60.0
_PLAIN_HTTP_TO_TLS_ANSWER: Final = (
    b"HTTP/1.0 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Connection: close\r\n\r\nClient sent an HTTP request to an HTTPS server.\n"
)


@dataclass(frozen=True)
class ConnectionLimits:
    """What one client, or many, may hold of the server; see the module docstring."""

    max_connections: int = 512
    """Open connections at most (``--web.max-connections``), lowered to fit RLIMIT_NOFILE."""
    header_timeout: float = 10.0
    """Seconds from connect (or from a keep-alive request's first byte) to a whole request
    head, TLS handshake included."""
    idle_timeout: float = 120.0
    """Seconds a keep-alive connection may wait for its next request: above the usual scrape
    intervals, so Prometheus keeps its connection (and TLS session) between scrapes."""
    write_timeout: float = 30.0
    """Seconds to hand a whole answer to the kernel."""
    max_header_bytes: int = 16384
    """Prometheus sends well under 1 KiB; 16 KiB leaves room for browsers' cookies and keeps
    what ``max_connections`` slow clients can make the exporter hold to a few tens of MB."""
    scrape_workers: int = 128
    """Scrapes answered at once (each may wait for refreshes up to its timeout)."""
    other_workers: int = 8
    """Other requests answered at once (landing page, health, errors)."""

    def effective_max_connections(self) -> int:
        """``max_connections``, lowered to fit the process's file-descriptor limit."""
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return self.max_connections
        return max(1, min(self.max_connections, soft - RESERVED_FDS))


@dataclass(frozen=True)
class Request:
    """A request head, complete, as a worker receives it."""

    head: bytes
    client: str
    received: float
    """``time.monotonic()`` when the head was complete."""


Body = tuple[bytes, ...]
"""A response body: its pieces, in order (the body is their concatenation)."""


@dataclass(frozen=True)
class Answer:
    """What a worker sends back: the response (``data``, then ``body``, whose pieces make the
    rest of it), and whether the connection stays open. A large body (the ``/metrics``
    exposition, 8 MB for 300 targets) is kept out of ``data``, not copied into it, and is sent
    :data:`WRITE_CHUNK_BYTES` at a time."""

    data: bytes
    keep_alive: bool
    body: Body = ()


Handler = Callable[[Request], Answer]


@dataclass(eq=False)
class _Connection:
    """One open connection, as the cap sees it."""

    waiting_since: float
    """When it began to wait for its next request (``time.monotonic()``)."""
    busy: bool = False
    """A request of it is being answered: never closed to make room."""
    started: bool = False
    """Its task has begun (and closes the socket when it ends)."""
    task: asyncio.Task[None] | None = None


class _HeadTooLarge(Exception):
    """The request head did not fit in ``max_header_bytes``."""

    def __init__(self, request_line_fits: bool) -> None:
        super().__init__("request head too large")
        self.request_line_fits = request_line_fits


class ConnectionServer:
    """Serves HTTP/1.1 on ``listeners`` with ``handler``, within ``limits``.

    ``is_scrape`` tells from a request head whether it is a scrape (served by the scrape
    workers). :meth:`serve_forever` runs until :meth:`stop` is called from another thread.
    """

    def __init__(
        self,
        listeners: Sequence[socket.socket],
        handler: Handler,
        *,
        is_scrape: Callable[[bytes], bool],
        ssl_context: ssl.SSLContext | None = None,
        limits: ConnectionLimits | None = None,
        ssl_contexts: Callable[[], ssl.SSLContext | None] | None = None,
    ) -> None:
        limits = limits if limits is not None else ConnectionLimits()
        self.listeners = list(listeners)
        for listener in self.listeners:
            listener.setblocking(False)
        self.limits = limits
        self.max_connections = limits.effective_max_connections()
        self._handler = handler
        self._is_scrape = is_scrape
        self._ssl_context = ssl_context
        # The TLS context for each new connection (renewed certificates), when TLS is on.
        self._ssl_contexts = ssl_contexts
        self._scrape_workers: WorkerPool[Answer] = WorkerPool(limits.scrape_workers, "scrape")
        self._other_workers: WorkerPool[Answer] = WorkerPool(limits.other_workers, "http")
        # Insertion-ordered; touched only in the loop's thread.
        self._connections: dict[_Connection, None] = {}
        self._in_flight = 0
        self._idle = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested = threading.Event()
        self._stopping = False
        self._done: asyncio.Event | None = None
        self._finished = threading.Event()
        self._last_warning: dict[str, float] = {}
        self._accept_backoff: dict[int, float] = {}
        self._accept_resumes: dict[int, asyncio.TimerHandle] = {}

    # --- lifecycle (called from other threads) -------------------------------------------------

    def serve_forever(self) -> None:
        """Accept and serve connections until :meth:`stop`."""
        try:
            asyncio.run(self._main())
        finally:
            for listener in self.listeners:
                listener.close()
            self._finished.set()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no request is being answered; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    def stop(self, grace_seconds: float = 10.0) -> bool:
        """Stop accepting, close the listening sockets and idle connections, let requests in
        flight finish (up to ``grace_seconds``), then close everything.

        Returns whether every request in flight finished in time.
        """
        self._stop_requested.set()
        loop = self._loop
        if loop is None:  # serve_forever never ran (or has not started yet)
            for listener in self.listeners:
                listener.close()
            return self.wait_idle(grace_seconds)
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(self._begin_stop)
        finished = self.wait_idle(grace_seconds)
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._end)
        self._finished.wait(grace_seconds)
        return finished

    @property
    def requests_in_flight(self) -> int:
        """Requests read and not yet answered (queued for a worker or being answered)."""
        with self._idle:
            return self._in_flight

    @property
    def open_connections(self) -> int:
        """Connections open now (approximate when read from another thread)."""
        return len(self._connections)

    # --- the loop ------------------------------------------------------------------------------

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(_log_loop_error)
        self._done = asyncio.Event()
        self._loop = loop
        if self._stop_requested.is_set():
            return
        for listener in self.listeners:
            self._accept_backoff[listener.fileno()] = ACCEPT_BACKOFF_SECONDS
            loop.add_reader(listener.fileno(), self._accept, listener)
        await self._done.wait()
        self._stop_accepting()
        tasks = [conn.task for conn in self._connections if conn.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Closed transports close their sockets in a callback of the next iterations.
        for _ in range(3):
            await asyncio.sleep(0)

    def _begin_stop(self) -> None:
        self._stopping = True
        self._stop_accepting()
        for conn in list(self._connections):
            if not conn.busy and conn.task is not None:
                conn.task.cancel()

    def _stop_accepting(self) -> None:
        loop = asyncio.get_running_loop()
        for handle in self._accept_resumes.values():
            handle.cancel()
        self._accept_resumes.clear()
        for listener in self.listeners:
            if listener.fileno() >= 0:
                loop.remove_reader(listener.fileno())
                listener.close()

    def _end(self) -> None:
        if self._done is not None:
            self._done.set()

    def _accept(self, listener: socket.socket) -> None:
        """Accept what is waiting on ``listener`` (a batch at most, then other work runs).

        A reader callback rather than ``loop.sock_accept``: a connection accepted just as its
        task is cancelled at shutdown would otherwise be lost, its socket left open.
        """
        loop = asyncio.get_running_loop()
        fd = listener.fileno()
        for _ in range(64):
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_RESOURCES:  # the client gave up (ECONNABORTED ...)
                    log.debug("accept failed", extra={"err": describe_exception(exc)})
                    continue
                # Accepting again at once would fail again at once (a busy loop): make room
                # where we can, and pause a little longer each time.
                self._warn(
                    "out_of_fds",
                    "out of file descriptors: pausing new connections",
                    err=describe_exception(exc),
                    open_connections=len(self._connections),
                )
                self._close_longest_waiting()
                delay = self._accept_backoff[fd]
                self._accept_backoff[fd] = min(2 * delay, ACCEPT_BACKOFF_MAX_SECONDS)
                loop.remove_reader(fd)
                self._accept_resumes[fd] = loop.call_later(delay, self._resume_accepting, listener)
                return
            self._accept_backoff[fd] = ACCEPT_BACKOFF_SECONDS
            sock.setblocking(False)
            self._admit(sock, peer)

    def _resume_accepting(self, listener: socket.socket) -> None:
        self._accept_resumes.pop(listener.fileno(), None)
        if not self._stopping:
            asyncio.get_running_loop().add_reader(listener.fileno(), self._accept, listener)

    def _admit(self, sock: socket.socket, peer: object) -> None:
        if len(self._connections) >= self.max_connections and not self._close_longest_waiting():
            self._warn(
                "full",
                "too many connections, all busy: refusing new ones",
                max_connections=self.max_connections,
            )
            sock.close()
            return
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "unix"
        conn = _Connection(waiting_since=time.monotonic())
        self._connections[conn] = None
        conn.task = asyncio.get_running_loop().create_task(self._serve(conn, sock, client))

        def close_if_never_started(_: object) -> None:
            # A task cancelled before it began never runs its own cleanup.
            if not conn.started:
                self._connections.pop(conn, None)
                sock.close()

        conn.task.add_done_callback(close_if_never_started)

    def _close_longest_waiting(self) -> bool:
        """Close the connection that has waited longest for a request; False if all are busy."""
        waiting = [conn for conn in self._connections if not conn.busy]
        if not waiting:
            return False
        oldest = min(waiting, key=lambda conn: conn.waiting_since)
        self._warn(
            "evict",
            "too many connections: closing the ones waiting longest for a request",
            max_connections=self.max_connections,
        )
        del self._connections[oldest]
        if oldest.task is not None:
            oldest.task.cancel()
        return True

    async def _serve(self, conn: _Connection, sock: socket.socket, client: str) -> None:
        loop = asyncio.get_running_loop()
        limits = self.limits
        writer: asyncio.StreamWriter | None = None
        conn.started = True
        try:
            head_deadline = loop.time() + limits.header_timeout
            streams = await self._open(sock, head_deadline)
            if streams is None:
                return
            reader, writer = streams
            buffer = bytearray()
            wait_deadline = head_deadline
            while True:
                conn.busy = False
                conn.waiting_since = time.monotonic()
                try:
                    end = await self._read_head(reader, buffer, wait_deadline, head_deadline)
                except _HeadTooLarge as exc:
                    await self._refuse_head(reader, writer, exc)
                    return
                if end is None:
                    return
                head = bytes(buffer[:end])
                del buffer[:end]
                answer = await self._answer(conn, writer, Request(head, client, time.monotonic()))
                if answer is None or not answer.keep_alive or self._stopping:
                    return
                wait_deadline = loop.time() + limits.idle_timeout
                head_deadline = 0.0  # set when the next request's first byte arrives
        except (TimeoutError, ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass  # a silent, slow or vanished client: its connection is closed, nothing else
        except OSError as exc:
            log.debug("connection error", extra={"client": client, "err": describe_exception(exc)})
        except Exception as exc:  # a bug: this connection ends, the server goes on
            log.error("error while serving a connection", extra={"err": describe_exception(exc)})
        finally:
            self._connections.pop(conn, None)
            if writer is None:
                sock.close()
            elif writer.transport.get_write_buffer_size() or self._stopping:
                # An answer not taken in time, or shutdown: do not wait for the client.
                writer.transport.abort()
            else:
                writer.close()

    async def _open(
        self, sock: socket.socket, deadline: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout_at(deadline):
            if self._ssl_context is not None:
                await _readable(sock)
                try:
                    first = sock.recv(1, socket.MSG_PEEK)
                except OSError:
                    return None
                if not first:
                    return None
                if first.isalpha():
                    # As Go's servers do: tell a client that forgot https:// instead of a reset.
                    with contextlib.suppress(OSError):
                        sock.send(_PLAIN_HTTP_TO_TLS_ANSWER)
                    return None
            reader = asyncio.StreamReader(limit=READ_CHUNK_BYTES, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            context = self._ssl_context
            if context is not None and self._ssl_contexts is not None:
                context = self._ssl_contexts() or context
            tls = context is not None
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                sock,
                ssl=context,
                ssl_handshake_timeout=max(0.001, deadline - loop.time()) if tls else None,
                # Not the default 30 s: a client that never answers our close_notify would
                # hold its file descriptor that long, uncounted.
                ssl_shutdown_timeout=TLS_SHUTDOWN_SECONDS if tls else None,
            )
        # drain() then waits until the whole answer is handed to the kernel, so the write
        # deadline covers all of it. Over TLS 1 byte, not 0: its transport pauses writing when
        # at least ``high`` bytes are pending, so at 0 it paused with nothing left to send and
        # resumed only at the client's next bytes (drain() waited for the write timeout).
        transport.set_write_buffer_limits(high=1 if tls else 0)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def _read_head(
        self,
        reader: asyncio.StreamReader,
        buffer: bytearray,
        wait_deadline: float,
        head_deadline: float,
    ) -> int | None:
        """Read until ``buffer`` holds a whole request head; its length, None at end of stream.

        The first byte must come by ``wait_deadline``, the whole head by ``head_deadline``
        (0: ``header_timeout`` after the first byte).
        """
        loop = asyncio.get_running_loop()
        if not buffer:
            async with asyncio.timeout_at(wait_deadline):
                chunk = await reader.read(READ_CHUNK_BYTES)
            if not chunk:
                return None
            buffer += chunk
        if head_deadline == 0.0:
            head_deadline = loop.time() + self.limits.header_timeout
        async with asyncio.timeout_at(head_deadline):
            while (end := head_length(buffer)) is None:
                if len(buffer) > self.limits.max_header_bytes:
                    raise _HeadTooLarge(self._request_line_fits(buffer))
                chunk = await reader.read(READ_CHUNK_BYTES)
                if not chunk:
                    return None
                buffer += chunk
        if end > self.limits.max_header_bytes:
            raise _HeadTooLarge(self._request_line_fits(buffer))
        return end

    def _request_line_fits(self, buffer: bytearray) -> bool:
        return 0 <= buffer.find(b"\n") <= self.limits.max_header_bytes

    async def _answer(
        self, conn: _Connection, writer: asyncio.StreamWriter, request: Request
    ) -> Answer | None:
        """Have a worker answer ``request`` and send the answer; None when the connection
        must close (the client went away, or a bug)."""
        scrape = self._is_scrape(request.head)
        # A scrape's connection is never closed to make room. Another request's is, until a
        # worker takes it: a flood of other requests queued for their few workers must not
        # hold every connection a scrape could use.
        conn.busy = scrape

        def run() -> Answer:
            conn.busy = True
            return self._handler(request)

        with self._idle:
            self._in_flight += 1
        try:
            workers = self._scrape_workers if scrape else self._other_workers
            try:
                answer = await asyncio.wrap_future(workers.submit(run))
            except Exception as exc:  # a bug in the handler, which answers every error itself
                log.error(
                    "error while answering a request",
                    extra={"path": request_path(request.head), "err": describe_exception(exc)},
                )
                return None
            try:
                async with asyncio.timeout(self.limits.write_timeout):
                    writer.write(answer.data)
                    for chunk in chunks(answer.body, WRITE_CHUNK_BYTES):
                        await writer.drain()  # (the write buffer limit is 0: all sent)
                        writer.write(chunk)
                    await writer.drain()
            except (ConnectionError, TimeoutError, ssl.SSLError) as exc:
                # The client went away (or stopped reading) mid-answer: nothing to answer to.
                log.debug(
                    "client went away",
                    extra={
                        "client": request.client,
                        "path": request_path(request.head),
                        "err": describe_exception(exc),
                    },
                )
                return None
            return answer
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    async def _refuse_head(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, error: _HeadTooLarge
    ) -> None:
        if error.request_line_fits:
            status = b"431 Request Header Fields Too Large"
        else:
            status = b"414 Request-URI Too Long"
        body = status[4:] + b"\n"
        writer.write(
            b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        async with asyncio.timeout(self.limits.write_timeout):
            await writer.drain()
        await _linger(reader, writer)

    def _warn(self, key: str, message: str, **extra: object) -> None:
        now = time.monotonic()
        last = self._last_warning.get(key)
        if last is not None and now - last < _WARN_EVERY_SECONDS:
            return
        self._last_warning[key] = now
        log.warning(message, extra=extra)


def chunks(pieces: Sequence[bytes], size: int) -> Iterator[bytes | memoryview]:
    """The concatenation of ``pieces`` in chunks of about ``size`` bytes: small pieces joined
    (a fleet's exposition is thousands of them), large ones cut into slices, not copies."""
    batch: list[bytes] = []
    batched = 0
    for piece in pieces:
        if not piece:
            continue
        if len(piece) >= size:
            if batch:
                yield b"".join(batch)
                batch, batched = [], 0
            view = memoryview(piece)
            for start in range(0, len(view), size):
                yield view[start : start + size]
            continue
        batch.append(piece)
        batched += len(piece)
        if batched >= size:
            yield b"".join(batch)
            batch, batched = [], 0
    if batch:
        yield b"".join(batch)


def head_length(buffer: bytes | bytearray) -> int | None:
    """The length of the request head at the start of ``buffer`` (up to and including the
    blank line, CRLF or bare LF), None while it is incomplete."""
    ends = [
        index + len(mark) for mark in (b"\r\n\r\n", b"\n\n") if (index := buffer.find(mark)) >= 0
    ]
    return min(ends) if ends else None


def request_path(head: bytes) -> str:
    """The request target of ``head``, for log lines (shortened, never raising)."""
    words = head.split(b"\n", 1)[0].split()
    target = words[1] if len(words) > 1 else b""
    return target[:MAX_LOGGED_PATH].decode("latin-1")


async def _readable(sock: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(sock.fileno(), wake)
    try:
        await ready
    finally:
        loop.remove_reader(sock.fileno())


async def _linger(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, seconds: float = 1.0
) -> None:
    """Close our side and read what the client still sends, a little while: closing with
    unread data would reset the connection, and the client could lose the answer."""
    if writer.can_write_eof():
        writer.write_eof()
    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
        async with asyncio.timeout(seconds):
            read = 0
            while read < 1 << 20 and (chunk := await reader.read(READ_CHUNK_BYTES)):
                read += len(chunk)


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, object]) -> None:
    # asyncio's default handler logs a traceback; these are clients' faults (TLS errors,
    # resets), worth a debug line.
    exc = context.get("exception")
    err = describe_exception(exc) if isinstance(exc, BaseException) else ""
    log.debug("connection error", extra={"detail": str(context.get("message", "")), "err": err})
