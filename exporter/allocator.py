"""The C library's memory allocator, set for what this process does with memory.

The exporter holds many small long-lived objects (a few hundred bytes for each tracked result;
Python's own allocator takes those from the C library in 1 MiB arenas) and handles a few large
short-lived buffers (API answers, the ``/metrics`` body and its copies on the way out), from
up to 64 refresh threads. glibc's ``malloc`` (Linux, and the Docker image) serves that poorly by
default, measured with 300 targets of 1,000 results (``make bench-scale``):

* it gives each thread that allocates while another does an arena of its own, up to eight per
  core; free memory then sits in many arenas, none of which can reuse another's. Threads of a
  Python process allocate under the GIL, one at a time, so more arenas buy nothing here;
* after a large block (at least 128 KiB, served by ``mmap`` and unmapped when freed) is freed,
  it raises that threshold to the block's size (up to 32 MiB): from then on the buffers of
  every ``/metrics`` body come from the heap, whose pages the process keeps when they are
  freed (the resident size grew by about 30 MB over a few scrapes).

:func:`tune_allocator` caps the arenas at :data:`ARENA_MAX` and fixes the ``mmap`` threshold at
:data:`MMAP_THRESHOLD_BYTES`, with ``mallopt(3)`` at start, before any other thread exists, so
that it applies however the exporter is started (``python -m exporter``, the console script, the
Docker image, a systemd unit). A setting the user made (``MALLOC_ARENA_MAX``,
``MALLOC_MMAP_THRESHOLD_`` or any ``glibc.malloc`` tunable in ``GLIBC_TUNABLES``) is left as it
is. :func:`release_free_memory` hands the pages freed inside the heaps back to the system
(``malloc_trim(3)``), for after the first walk of every target. With another C library (musl,
macOS) both do nothing.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Mapping
from functools import cache
from typing import Final

__all__ = ["ARENA_MAX", "MMAP_THRESHOLD_BYTES", "release_free_memory", "tune_allocator"]

ARENA_MAX: Final = 2
"""Arenas of glibc's ``malloc``: one for the main thread, one the other threads share."""
MMAP_THRESHOLD_BYTES: Final = 128 * 1024
"""Blocks at least this large are mapped on their own and unmapped when freed (glibc's initial
threshold, kept from rising)."""

# mallopt(3) parameters, from glibc's <malloc.h>.
_M_MMAP_THRESHOLD: Final = -3
_M_ARENA_MAX: Final = -8
# Each setting, the environment variable that makes it (glibc reads it at start), its value.
_SETTINGS: Final = (
    ("MALLOC_ARENA_MAX", _M_ARENA_MAX, ARENA_MAX),
    ("MALLOC_MMAP_THRESHOLD_", _M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES),
)


@cache
def _glibc() -> ctypes.CDLL | None:
    """The C library of this process when it is glibc, else None."""
    try:
        version = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"; unknown elsewhere
        libc = ctypes.CDLL(None)  # the symbols the process already has
    except (ValueError, OSError):
        return None
    if not version or not version.startswith("glibc"):
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def tune_allocator(environ: Mapping[str, str]) -> list[str]:
    """Set glibc's ``malloc`` for this process (see the module docstring); returns the names
    of the settings made (none where the C library is not glibc, or the user set them)."""
    libc = _glibc()
    if libc is None or "glibc.malloc." in environ.get("GLIBC_TUNABLES", ""):
        return []
    made = []
    for variable, parameter, value in _SETTINGS:
        if variable not in environ and libc.mallopt(parameter, value) == 1:
            made.append(variable)
    return made


def release_free_memory() -> None:
    """Hand the free pages of glibc's heaps back to the system (nothing elsewhere)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
