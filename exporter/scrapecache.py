"""One rendering of ``/metrics`` shared by the scrapes that arrive together (see
:class:`ExpositionCache`). No I/O: the server asks it for a body and sends it.

A rendering is a list of pieces (bytes the collector already holds: each target's text was
rendered when its refresh ended), never one joined body: for a fleet of 300 targets that body is
8 MB, held once more while joining and kept until the next scrape. A body is a
:data:`~exporter.connections.Body`, the pieces the server sends one after the other. A scrape
that takes gzip (Prometheus always does) compresses the pieces a batch at a time; a plain one
is sent the pieces themselves. A rendering
first compressed keeps only the compressed body (a plain scrape that shares it later
decompresses it); one first sent plain keeps its pieces (and the compressed body made from them).
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from exporter.connections import Body, chunks

RENDERING_REUSE_SECONDS: Final = 1.0
"""How old a rendering of unchanged data a scrape may be served."""
GZIP_LEVEL: Final = 1
"""Half the CPU of level 6 on a fleet's 8 MB exposition, for a body about 10% larger (the text
is repetitive enough for either)."""
_BATCH_BYTES: Final = 262_144  # pieces joined this much at a time: zlib is fast on big chunks
_GZIP_WBITS: Final = 31  # zlib's window bits for a gzip stream (16 + 15)


def gzip_pieces(pieces: Sequence[bytes]) -> bytes:
    """The gzip stream of the pieces joined, without joining them all at once."""
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS)
    out = [compressor.compress(chunk) for chunk in chunks(pieces, _BATCH_BYTES)]
    out.append(compressor.flush())
    return b"".join(out)


class ExpositionCache:
    """Renders the registry once for scrapes that arrive together.

    A scrape may take a rendering that began after its refreshes were done (``not_before``):
    it holds everything the scrape would have rendered itself. It may also take one that
    began up to :data:`RENDERING_REUSE_SECONDS` earlier if ``data_version`` (the snapshots
    the collector renders, compared by identity) has not changed since: no refresh finished
    in between. Without this, 100 scrapes at once rendered 100 times, one after the other,
    and many answered after Prometheus' timeout.

    ``render_metrics`` (Accept header -> pieces of the body and its content type) renders
    instead of encoding ``registry``.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        data_version: Callable[[], Sequence[object]] | None = None,
        render_metrics: Callable[[str], tuple[Sequence[bytes], str]] | None = None,
    ) -> None:
        self._registry = registry
        self._data_version = data_version
        self._render_metrics = render_metrics
        self._lock = threading.Lock()
        self._latest: dict[str, _Rendering] = {}

    def render(self, accept: str, not_before: float, *, compress: bool) -> tuple[Body, str]:
        """The exposition (gzip-compressed if ``compress``) and its content type."""
        encoder, content_type = choose_encoder(accept)
        version = tuple(self._data_version()) if self._data_version is not None else None
        with self._lock:
            rendering = self._latest.get(content_type)
            mine = rendering is None or not rendering.serves(not_before, version)
            if mine:
                rendering = _Rendering(time.monotonic(), version)
                self._latest[content_type] = rendering
        assert rendering is not None
        if mine:
            try:
                if self._render_metrics is not None:
                    rendering.pieces, content_type = self._render_metrics(accept)
                    rendering.content_type = content_type
                else:
                    rendering.pieces = (encoder(self._registry),)
                # Its own body first, so that the pieces are what this scrape asked for.
                body = rendering.body_for(compress)
            finally:
                rendering.done.set()
        else:
            rendering.done.wait()
            body = rendering.body_for(compress)
        if body is None:  # that rendering failed: render afresh
            return self.render(accept, time.monotonic(), compress=compress)
        return body, rendering.content_type or content_type


@dataclass(eq=False)
class _Rendering:
    started: float
    version: tuple[object, ...] | None
    pieces: Sequence[bytes] | None = None
    """What was rendered, until a body is made of it (see :meth:`body_for`)."""
    content_type: str = ""
    plain: Body | None = None
    compressed: bytes | None = None
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serves(self, not_before: float, version: tuple[object, ...] | None) -> bool:
        """Whether a scrape (``not_before``, data at ``version``) may take this rendering."""
        if self.done.is_set() and self.failed:
            return False
        if self.started >= not_before:
            return True
        return (
            version is not None
            and self.version is not None
            and self.started >= not_before - RENDERING_REUSE_SECONDS
            and len(version) == len(self.version)
            and all(new is old for new, old in zip(version, self.version, strict=True))
        )

    @property
    def failed(self) -> bool:
        """Nothing was rendered (the collector raised)."""
        return self.pieces is None and self.plain is None and self.compressed is None

    def body_for(self, compress: bool) -> Body | None:
        """The body (gzip if ``compress``), made on first need from whatever this rendering
        holds; None when it holds nothing (it failed). Whatever is made replaces the pieces:
        the fleet's text is then held once, as that body."""
        with self.lock:
            if compress:
                if self.compressed is None:
                    if self.pieces is not None:
                        self.compressed = gzip_pieces(self.pieces)
                    elif self.plain is not None:
                        self.compressed = gzip_pieces(self.plain)
                    else:
                        return None
                    self.pieces = None
                return (self.compressed,)
            if self.plain is None:
                if self.pieces is not None:
                    pieces, self.pieces = self.pieces, None
                    self.plain = tuple(pieces)
                elif self.compressed is not None:
                    self.plain = (zlib.decompress(self.compressed, _GZIP_WBITS),)
            return self.plain
