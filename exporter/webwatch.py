"""The web config of a running server, re-read when its files change.

exporter-toolkit reads the web config file and the TLS files again for each request and each
handshake, so a certificate renewed by cert-manager or a changed ``basic_auth_users`` takes
effect without a restart. :class:`WebConfigSource` does the same, cheaply: it looks at the files'
modification time, size and inode at most once per :data:`CHECK_INTERVAL_SECONDS` and loads them
again only when one changed. A new file that does not load (a half-written certificate, a key
that does not match it, a YAML error) is logged once, as an error, and the previous config
keeps serving; the next change is tried again.

Connections already open keep the certificate of their handshake; each new connection gets the
context of the moment (:meth:`WebConfigSource.ssl_context`).
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

from exporter.webconfig import WebConfig, WebConfigError, load_web_config

CHECK_INTERVAL_SECONDS: Final = 1.0

log = logging.getLogger(__name__)

FileStamp = tuple[str, int, int, int] | tuple[str, str]
"""(path, mtime in ns, size, inode), or (path, the reason it cannot be read)."""


class WebConfigSource:
    """The current web config and TLS context of a server (see the module docstring).

    ``path`` None: a config given as such (or none), never re-read.
    """

    def __init__(
        self,
        config: WebConfig | None,
        path: Path | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._path = path
        self._clock = clock
        self._lock = threading.Lock()
        self._config = config
        self._context = config.ssl_context() if config is not None else None
        self._stamps = self._stamp(config)
        self._checked = clock()

    @property
    def tls(self) -> bool:
        """Whether the server speaks TLS (fixed for the life of the listeners)."""
        return self._context is not None

    def current(self) -> WebConfig | None:
        """The web config to apply to a request now."""
        self._check()
        return self._config

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for a new connection now (None: plain HTTP)."""
        self._check()
        return self._context

    def load(self) -> tuple[WebConfig, ssl.SSLContext | None] | None:
        """Read the file now; raises ``WebConfigError`` (a reload checks it before applying).

        None when there is no file to read.
        """
        if self._path is None:
            return None
        config = load_web_config(self._path)
        context = config.ssl_context()
        if (context is not None) != self.tls:
            state = "on" if self.tls else "off"
            raise WebConfigError(
                f"web config {self._path}: TLS is {state} in the running server; turning it "
                "on or off needs a restart"
            )
        return config, context

    def replace(self, loaded: tuple[WebConfig, ssl.SSLContext | None] | None) -> None:
        """Serve what :meth:`load` returned from now on."""
        if loaded is None:
            return
        config, context = loaded
        with self._lock:
            self._config, self._context = config, context
            self._stamps = self._stamp(config)
            self._checked = self._clock()

    def _check(self) -> None:
        if self._path is None or self._clock() - self._checked < CHECK_INTERVAL_SECONDS:
            return
        if not self._lock.acquire(blocking=False):
            return  # another thread is checking: this request uses the config of now
        try:
            self._checked = self._clock()
            stamps = self._stamp(self._config)
            if stamps == self._stamps:
                return
            # Remembered before loading: a file that fails is reported once, not every second.
            self._stamps = stamps
            try:
                loaded = self.load()
            except WebConfigError as exc:
                log.error(
                    "changed web config not loaded, the previous one keeps serving",
                    extra={"err": str(exc)},
                )
                return
            if loaded is not None:
                self._config, self._context = loaded
                self._stamps = self._stamp(self._config)
                log.info("web config files changed: reloaded", extra={"file": str(self._path)})
        finally:
            self._lock.release()

    def _stamp(self, config: WebConfig | None) -> tuple[FileStamp, ...]:
        if self._path is None:
            return ()
        paths = [self._path]
        if config is not None:
            tls = config.tls_server_config
            paths += [p for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p]
        return tuple(_file_stamp(path) for path in paths)


def _file_stamp(path: Path) -> FileStamp:
    try:
        info = os.stat(path)  # follows symlinks: a Kubernetes secret volume swaps a link
    except OSError as exc:
        return (str(path), exc.strerror or type(exc).__name__)
    return (str(path), info.st_mtime_ns, info.st_size, info.st_ino)
