"""glibc's malloc settings: made at start unless the user made them, skipped elsewhere."""

from __future__ import annotations

import os

import pytest

from exporter.allocator import tune_allocator

GLIBC = (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_the_arenas_and_the_mmap_threshold_are_set() -> None:
    assert tune_allocator({}) == ["MALLOC_ARENA_MAX", "MALLOC_MMAP_THRESHOLD_"]


@pytest.mark.skipif(not GLIBC, reason="the settings are glibc's")
def test_what_the_user_set_is_left_alone() -> None:
    assert tune_allocator({"MALLOC_ARENA_MAX": "8"}) == ["MALLOC_MMAP_THRESHOLD_"]
    assert tune_allocator({"MALLOC_MMAP_THRESHOLD_": "65536"}) == ["MALLOC_ARENA_MAX"]
    assert tune_allocator({"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}) == []
    # Another library's tunables are not the allocator's.
    assert tune_allocator({"GLIBC_TUNABLES": "glibc.rtld.optional_static_tls=2048"}) == [
        "MALLOC_ARENA_MAX",
        "MALLOC_MMAP_THRESHOLD_",
    ]


@pytest.mark.skipif(GLIBC, reason="without glibc nothing is set")
def test_nothing_is_set_with_another_c_library() -> None:
    assert tune_allocator({}) == []
