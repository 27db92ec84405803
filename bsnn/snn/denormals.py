"""Denormal float32s flushed to zero for a block of work, on every intra-op thread.

x86 computes on denormals (magnitudes below 1.2e-38) up to 100x slower than on normal floats,
and they arise where values decay towards zero: potentials and currents of nearly silent
neurons, an ANN's activations through many layers of small weights. Flushing them (FTZ, and
reading them as zero, DAZ) changes no spike: a threshold is never within 1e-38 of a potential.

`torch.set_flush_denormal` sets the calling thread's MXCSR only, and torch has no getter:
measured with two intra-op threads, an elementwise op flushed half of its elements (the
OpenMP worker's half was computed with denormals). So `flush_denormals` also sets the workers,
by running libc's `fesetenv` on every thread of the caller's OpenMP team through libgomp's
`GOMP_parallel` (the entry point of `#pragma omp parallel`; no Python runs on the workers), and
checks once per process that an elementwise op over all threads then flushes everything;
where any of that is missing (not Linux, another OpenMP runtime) only the calling thread is
set, as torch itself does. On leaving, every thread gets the caller's environment back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

_FENV_BYTES = 256  # > sizeof(fenv_t) on every libc (glibc x86-64: 32)


def flushes_here() -> bool:
    """Whether the calling thread flushes denormals now: a denormal double made and doubled
    in Python comes out 0 when it does (the flags govern float64 as well; no torch op, so
    nothing waits on a device)."""
    tiny = sys.float_info.min / 2**52  # computed at run time, under the thread's flags
    return tiny * 2 == 0


def _flushes_everywhere() -> bool:
    """Whether an elementwise op split over every intra-op thread flushes all its elements."""
    tiny = torch.ones(1 << 20, dtype=torch.int32).view(torch.float32)
    return not bool((tiny * 2).view(torch.int32).any())


def _openmp_library() -> str | None:
    """The path of the libgomp torch runs on (its bundled copy first), if loaded."""
    try:
        maps = Path("/proc/self/maps").read_text().splitlines()
    except OSError:
        return None
    paths = {line.split()[-1] for line in maps if "libgomp" in line.split()[-1]}
    own = str(Path(torch.__file__).parent)
    return min(paths, key=lambda p: (not p.startswith(own), p), default=None)


@functools.cache
def _thread_tools() -> tuple[Any, Any] | None:
    """(libm, GOMP_parallel), or None where the workers cannot be reached."""
    if sys.platform != "linux":
        return None
    gomp, libm = _openmp_library(), ctypes.util.find_library("m")
    if gomp is None or libm is None:
        return None
    try:
        math, parallel = ctypes.CDLL(libm), ctypes.CDLL(gomp).GOMP_parallel
        for name in ("fegetenv", "fesetenv"):
            getattr(math, name).argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return None
    parallel.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    parallel.restype = None
    return math, parallel


def _set_team(tools: tuple[Any, Any], env: Any) -> None:
    """fesetenv(env) on the calling thread and every thread of its OpenMP team."""
    math, parallel = tools
    fn = ctypes.cast(math.fesetenv, ctypes.c_void_p)
    parallel(fn, ctypes.cast(env, ctypes.c_void_p), torch.get_num_threads(), 0)


@functools.cache
def _team_works() -> bool:
    """Whether setting the team reaches every thread an elementwise op uses (tried once)."""
    tools = _thread_tools()
    if tools is None:
        return False
    saved = ctypes.create_string_buffer(_FENV_BYTES)
    tools[0].fegetenv(saved)
    try:
        torch.set_flush_denormal(True)
        flushing = ctypes.create_string_buffer(_FENV_BYTES)
        tools[0].fegetenv(flushing)
        _set_team(tools, flushing)
        return _flushes_everywhere()
    finally:
        _set_team(tools, saved)


@contextmanager
def flush_denormals() -> Iterator[bool]:
    """Denormals flushed to zero inside, on the calling thread and (where it can) on torch's
    intra-op threads; the caller's setting restored after. Yields whether every thread
    flushes (False: only the calling thread, or none on a CPU without the flags)."""
    if not _team_works():
        before = flushes_here()
        supported = torch.set_flush_denormal(True)
        try:
            yield False
        finally:
            if supported:
                torch.set_flush_denormal(before)
        return
    tools = _thread_tools()
    assert tools is not None
    saved, flushing = (ctypes.create_string_buffer(_FENV_BYTES) for _ in range(2))
    tools[0].fegetenv(saved)
    torch.set_flush_denormal(True)
    tools[0].fegetenv(flushing)
    _set_team(tools, flushing)
    try:
        yield True
    finally:
        _set_team(tools, saved)
