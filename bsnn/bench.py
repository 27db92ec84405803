"""`bsnn bench engine`: the engine against bindsnet and against the dense floor, one run.

All figures are measured in the same process on the same converted network and batch, so the
ratios hold on any machine. Memory: peak CUDA allocation on CUDA; on CPU the peak of the C heap's
bytes in use (glibc's mallinfo2: heap plus mmap'd blocks, so neither fragmentation nor pages kept
after a free count) above a baseline, sampled every millisecond from a thread; the resident set
where mallinfo2 is missing.
"""

from __future__ import annotations

import ctypes
import gc
import threading
import time
from collections.abc import Callable
from typing import Any

import torch

from bsnn.conversion import convert
from bsnn.conversion.percentile import StreamingPercentile
from bsnn.models import build_model
from bsnn.snn.engine import Engine
from bsnn.snn.options import SimOptions


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    try:
        fn = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    fn.restype = _MallInfo2
    return fn  # type: ignore[no-any-return]


_MALLINFO2 = _mallinfo2()


def _heap_bytes() -> int:
    """Bytes the C allocator has handed out and not taken back (the resident set without glibc)."""
    if _MALLINFO2 is not None:
        info = _MALLINFO2()
        return int(info.uordblks + info.hblkhd)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


class PeakMemory:
    """Peak memory above the level at entry, for the device that the work runs on."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
        else:
            gc.collect()
            self.base = _heap_bytes()
            self._stop = threading.Event()
            self._max = self.base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, _heap_bytes())
            time.sleep(0.001)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self._max, _heap_bytes()) - self.base


def _once(fn: Callable[[], Any], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t


def _timed_pair(a: Callable[[], Any], b: Callable[[], Any], device: torch.device,
                repeat: int) -> tuple[float, float]:
    """Best wall times of `a` and `b` after a warm-up of each, timed in turns, so a slow spell
    of a shared machine does not land on one side only."""
    a(), b()
    times_a, times_b = [], []
    for _ in range(repeat):
        times_a.append(_once(a, device))
        times_b.append(_once(b, device))
    return min(times_a), min(times_b)


def bench_threshold_percentile(shape: tuple[int, ...] = (32, 64, 112, 112),
                               device: torch.device | None = None) -> dict[str, float]:
    """Exact 99.7th percentile of one large activation (what a threshold is set from): seconds
    and peak extra memory. The figures keep their `calibration_` names in the JSON."""
    device = device or torch.device("cpu")
    a = torch.relu(torch.randn(shape, device=device))
    with PeakMemory(device) as mem:
        t = time.perf_counter()
        est = StreamingPercentile(99.7)
        while not est.done:
            est.update(a)
            est.end_pass()
        seconds = time.perf_counter() - t
    return {"calibration_s": seconds, "calibration_peak_mb": mem.peak / 2**20,
            "calibration_tensor_mb": a.numel() * 4 / 2**20}


def bench_engine(
    device: torch.device,
    batch: int = 32,
    time_steps: int = 64,
    arch: str = "vgg8ab",
    with_bindsnet: bool = True,
    repeat: int = 2,
) -> dict[str, Any]:
    """Engine vs bindsnet vs the ANN run T times, on one converted network and batch."""
    torch.manual_seed(0)
    model = build_model(arch, 10, (3, 32, 32)).to(device).eval()
    calib = [torch.randn(batch, 3, 32, 32, device=device) for _ in range(2)]
    net = convert(model, lambda: calib, 99.7).network
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    options = SimOptions(time=time_steps)
    engine = Engine(net, options)
    img_steps = batch * time_steps

    def dense() -> None:
        with torch.no_grad():
            for _ in range(time_steps):
                model(x)

    result: dict[str, Any] = {"device": str(device), "arch": arch, "batch": batch,
                              "time_steps": time_steps}
    with PeakMemory(device) as ann_mem:
        dense()
    with PeakMemory(device) as engine_mem:
        engine.run_batch(x, y)
    dense_s, engine_s = _timed_pair(dense, lambda: engine.run_batch(x, y), device, repeat)
    result.update(
        engine_img_steps_per_s=img_steps / engine_s,
        dense_img_steps_per_s=img_steps / dense_s,
        engine_over_dense_time=engine_s / dense_s,
        engine_peak_mb=engine_mem.peak / 2**20,
        ann_peak_mb=ann_mem.peak / 2**20,
    )
    if with_bindsnet:
        from bsnn.backends.bindsnet import BindsnetBackend

        backend = BindsnetBackend(net, options)
        bindsnet_s = min(_once(lambda: backend.run_batch(x, y), device) for _ in range(2))
        ours, theirs = engine.run_batch(x, y), backend.run_batch(x, y)
        result.update(
            bindsnet_img_steps_per_s=img_steps / bindsnet_s,
            engine_over_bindsnet_speed=bindsnet_s / engine_s,
            spike_count_mismatch=int((ours.spikes - theirs.spikes).abs().sum()),
        )
    return result
