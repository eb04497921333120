"""The C allocator's state while hwnas measures: part of the measurement protocol (``Protocol.allocator``).

Eager torch allocates every activation afresh on each run. glibc's malloc serves a block above its mmap threshold
with fresh pages from the OS (each faulted in on first touch) and unmaps it on free; the threshold grows with the
blocks freed so far (to at most 32 MB) and the heap's top goes back to the OS above a trim threshold. So whether
a model's runs page-fault, and how long they take, depends on what the process allocated before: on this project's
Zen 5 VM the same architecture ran fault-free in one process and 1.6x slower with thousands of faults per run in
another, and a block above 32 MB (batch 32 x 256 tokens) faulted on every run, up to 1.6 GB of fresh pages
(``benchmarks/README.md``, *Page faults of eager torch*).

``no_mmap`` (the protocol's default since 2026-12-05) takes every block from the heap and never hands the heap
back: once a model's first runs have grown it, later runs take no faults, and the time is the model's own, not the
process history's. A deployment gets the same with :data:`DEPLOY_ENV` in its environment. ``default`` leaves
glibc's own settings (profiles written before the field existed were measured so). Where the C library is not
glibc (macOS, musl) nothing can be set: :func:`apply_allocator` says so and the default allocator measures.
"""
from __future__ import annotations

import ctypes
import ctypes.util

ALLOCATORS = ("no_mmap", "default")
DEPLOY_ENV = "GLIBC_TUNABLES=glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=4294967296"

# mallopt(3) parameters and glibc's static defaults (malloc/malloc.c)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
DEFAULT_TRIM, DEFAULT_MMAP_THRESHOLD, DEFAULT_MMAP_MAX = 128 * 1024, 128 * 1024, 65536

_state = {"applied": None}  # the last mode this process set with mallopt (None: glibc's defaults untouched)


def _glibc():
    """The C library when it is glibc (has ``mallopt`` and ``gnu_get_libc_version``), else None."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return libc
    except (OSError, AttributeError):
        return None


def apply_allocator(mode: str) -> str:
    """Put this process's allocator in ``mode`` (one of :data:`ALLOCATORS`) for what is measured next; returns
    what holds now, for the record: ``no_mmap``, ``default``, ``default (static thresholds)`` (``default`` asked
    after ``no_mmap`` in the same process: glibc cannot go back to its growing threshold) or ``default (not glibc:
    MODE not set)``. Idempotent and cheap: every measurement calls it. Process-wide: the tests call it in a
    subprocess of their own.
    """
    if mode not in ALLOCATORS:
        from nas.errors import HwnasError

        raise HwnasError(f"unknown allocator mode {mode!r} in the measurement protocol; use one of {list(ALLOCATORS)}")
    if mode == _state["applied"] or (mode == "default" and _state["applied"] is None):
        return _describe(mode)
    libc = _glibc()
    if libc is None:
        return "default" if mode == "default" else f"default (not glibc: {mode} not set)"
    if mode == "no_mmap":
        ok = libc.mallopt(M_MMAP_MAX, 0) and libc.mallopt(M_TRIM_THRESHOLD, -1)  # -1: SIZE_MAX, never trim
    else:
        ok = (libc.mallopt(M_MMAP_MAX, DEFAULT_MMAP_MAX) and libc.mallopt(M_MMAP_THRESHOLD, DEFAULT_MMAP_THRESHOLD)
              and libc.mallopt(M_TRIM_THRESHOLD, DEFAULT_TRIM))
    if not ok:  # pragma: no cover - glibc refuses none of these values
        return f"default (mallopt refused {mode})"
    _state["applied"] = mode
    return _describe(mode)


def allocator_note(applied: str | None) -> str:
    """The words a report appends to its measurement protocol for the allocator ``applied`` (what
    :func:`apply_allocator` returned; None: not recorded).

    >>> allocator_note("no_mmap")[:46]
    ', malloc without mmap or trimming (deploy with'
    """
    if applied == "no_mmap":
        return f", malloc without mmap or trimming (deploy with {DEPLOY_ENV} for these latencies)"
    return f", allocator: {applied}" if applied else ""


def _describe(mode: str) -> str:
    return "default (static thresholds)" if mode == "default" and _state["applied"] == "default" else mode
