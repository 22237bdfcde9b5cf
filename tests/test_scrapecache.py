"""The rendering scrapes share (exporter.scrapecache): shared while the data is the same, gzip
made from the pieces without the plain body, nothing kept but the body a scrape took."""

from __future__ import annotations

import gc
import gzip
import threading
import time
import weakref
from collections.abc import Iterable

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

from exporter.connections import Body
from exporter.scrapecache import ExpositionCache, gzip_pieces


class CountingCollector:
    """Counts its collect() calls; its value is the current ``data``."""

    def __init__(self) -> None:
        self.calls = 0
        self.data = object()
        # A number per data object: distinct data always render differently (``id() % 1000``
        # of two objects could be equal, and the test then failed once in a few hundred runs).
        self._numbers: dict[object, int] = {}

    def collect(self) -> Iterable[Metric]:
        self.calls += 1
        gauge = GaugeMetricFamily("test_data", "Which data.")
        gauge.add_metric((), self._numbers.setdefault(self.data, len(self._numbers)))
        return [gauge]


def joined(answer: tuple[Body, str]) -> bytes:
    """The body of an answer of :meth:`ExpositionCache.render`, whole."""
    return b"".join(answer[0])


def test_scrapes_share_a_rendering_until_the_data_changes() -> None:
    collector = CountingCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    cache = ExpositionCache(registry, lambda: [collector.data])
    first = joined(cache.render("", time.monotonic(), compress=False))
    # Unchanged data: a scrape whose wait ended after that rendering began still shares it.
    assert joined(cache.render("", time.monotonic(), compress=False)) == first
    assert gzip.decompress(joined(cache.render("", time.monotonic(), compress=True))) == first
    assert collector.calls == 1
    collector.data = object()  # a refresh published new snapshots
    second = joined(cache.render("", time.monotonic(), compress=False))
    assert collector.calls == 2
    assert second != first
    # A scrape that arrived before that rendering began shares it whatever the data.
    assert joined(cache.render("", 0.0, compress=False)) == second
    assert collector.calls == 2


def test_without_a_data_version_a_scrape_never_takes_an_older_rendering() -> None:
    collector = CountingCollector()
    registry = CollectorRegistry()
    registry.register(collector)
    cache = ExpositionCache(registry)
    for _ in range(3):
        cache.render("", time.monotonic(), compress=False)
    assert collector.calls == 3


@pytest.mark.parametrize(
    "pieces",
    [
        [],
        [b""],
        [b"one line\n"],
        [b"x" * 100_000, b"", b"y" * 300_000, b"z\n" * 70_000],  # batches of every size
        [f'metric{{n="{n}"}} {n}\n'.encode() for n in range(40_000)],
    ],
)
def test_gzip_of_pieces_is_the_gzip_of_the_joined_body(pieces: list[bytes]) -> None:
    assert gzip.decompress(gzip_pieces(pieces)) == b"".join(pieces)


class Pieces(list[bytes]):
    """A rendering's pieces that a test can watch (a weak reference tells when they are freed)."""


def test_a_gzip_scrape_keeps_only_the_compressed_body() -> None:
    rendered: list[weakref.ref[Pieces]] = []

    def render(accept: str) -> tuple[Pieces, str]:
        pieces = Pieces([b"# a fleet's text\n", b"metric 1\n" * 50_000])
        rendered.append(weakref.ref(pieces))
        return pieces, "text/plain"

    cache = ExpositionCache(CollectorRegistry(), list, render)
    answer, content_type = cache.render("", time.monotonic(), compress=True)
    body = b"".join(answer)
    assert content_type == "text/plain"
    assert gzip.decompress(body) == b"# a fleet's text\n" + b"metric 1\n" * 50_000
    gc.collect()
    assert rendered[0]() is None  # neither the pieces nor a plain body built from them
    # Other scrapes of the same data share it, a plain one too (from the compressed body).
    assert joined(cache.render("", time.monotonic(), compress=True)) == body
    plain = joined(cache.render("", time.monotonic(), compress=False))
    assert plain == gzip.decompress(body)
    assert len(rendered) == 1


def test_a_plain_scrape_is_sent_the_pieces_and_never_joins_them() -> None:
    # A fleet's pieces are held by the collector anyway: a joined copy (8 MB for 300 targets)
    # would be held once more until the next scrape.
    pieces = [b"# a fleet's text\n", b"metric 1\n" * 50_000, b"metric 2\n" * 50_000]
    cache = ExpositionCache(CollectorRegistry(), list, lambda accept: (pieces, "text/plain"))
    for _ in range(2):  # the scrape that renders, and one that shares its rendering
        body, _ = cache.render("", time.monotonic(), compress=False)
        assert len(body) == len(pieces)
        assert all(sent is piece for sent, piece in zip(body, pieces, strict=True))
    # A gzip scrape of the same rendering compresses them.
    assert gzip.decompress(joined(cache.render("", time.monotonic(), compress=True))) == b"".join(
        pieces
    )


def test_a_failed_rendering_is_not_served_and_the_next_scrape_renders_again() -> None:
    calls = 0

    def render(accept: str) -> tuple[list[bytes], str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("the collector failed")
        return [b"ok\n"], "text/plain"

    cache = ExpositionCache(CollectorRegistry(), list, render)
    with pytest.raises(RuntimeError):
        cache.render("", time.monotonic(), compress=True)
    assert gzip.decompress(joined(cache.render("", time.monotonic(), compress=True))) == b"ok\n"


def test_scrapes_wanting_plain_and_gzip_at_once_all_get_the_whole_body() -> None:
    body = b"metric 1\n" * 20_000
    renders = 0
    lock = threading.Lock()
    all_arrived = threading.Event()

    def render(accept: str) -> tuple[list[bytes], str]:
        nonlocal renders
        with lock:
            renders += 1
        all_arrived.wait(timeout=10)  # the first rendering is still going when the others come
        return [body[:1000], body[1000:]], "text/plain"

    cache = ExpositionCache(CollectorRegistry(), list, render)
    got: list[bytes] = []

    def scrape(compress: bool) -> None:
        answer = joined(cache.render("", time.monotonic(), compress=compress))
        got.append(gzip.decompress(answer) if compress else answer)

    threads = [threading.Thread(target=scrape, args=(n % 2 == 0,)) for n in range(40)]
    for thread in threads:
        thread.start()
    all_arrived.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    assert got == [body] * 40
    # One rendering for all (a few on a machine so slow that some came after the reuse window).
    assert renders <= 3
