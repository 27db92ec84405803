"""`bsnn bench engine`: the engine against the dense floor, SpikingJelly and bindsnet, one run.

All figures are measured in the same process on the same converted network and batch, so the
ratios hold on any machine. Memory: peak CUDA allocation on CUDA; on CPU the peak of the C heap's
bytes in use (glibc's mallinfo2: heap plus mmap'd blocks, so neither fragmentation nor pages kept
after a free count) above a baseline, sampled every millisecond from a thread; the resident set
where mallinfo2 is missing.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import importlib.util
import io
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from bsnn.conversion import convert
from bsnn.conversion.percentile import StreamingPercentile
from bsnn.models import build_model
from bsnn.snn.engine import Engine, fp32_precision
from bsnn.snn.network import SpikingNetwork
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


def timed_in_turns(contenders: dict[str, Callable[[], Any]], device: torch.device,
                   repeat: int) -> dict[str, list[float]]:
    """Wall times of each contender, `repeat` rounds after a warm-up of each, one after
    another in every round, so a slow spell of a shared machine does not land on one side."""
    for fn in contenders.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeat):
        for name, fn in contenders.items():
            times[name].append(_once(fn, device))
    return times


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


def spikingjelly_run(model: nn.Module, calib: list[torch.Tensor], x: torch.Tensor,
                     time_steps: int, percentile: float) -> Callable[[], torch.Tensor]:
    """SpikingJelly's conversion of `model` as its docs do it (the FX converter with the
    rate-coding recipe, thresholds at the same percentile) and a function that runs it T steps
    on `x` as its examples do: reset, then the single-step network once per step."""
    from spikingjelly.activation_based import ann2snn, functional
    from spikingjelly.logger import logger

    logger.disable("spikingjelly")  # a line per conversion
    recipe = ann2snn.RateCodingRecipe(dataloader=calib, mode=f"{percentile}%")
    with contextlib.redirect_stderr(io.StringIO()):  # its calibration's progress bar
        snn = ann2snn.Converter(recipe=recipe, device=x.device).convert(copy.deepcopy(model))

    @torch.no_grad()
    def run() -> torch.Tensor:
        functional.reset_net(snn)
        out = snn(x)
        for _ in range(time_steps - 1):
            out += snn(x)
        return out

    return run


def has_spikingjelly() -> bool:
    """Whether the optional contender (the `bench` extra) is installed."""
    return importlib.util.find_spec("spikingjelly") is not None


def _dense(model: nn.Module, x: torch.Tensor, time_steps: int,
           tf32: bool) -> Callable[[], None]:
    """The dense floor: the ANN run T times on the same batch (IEEE float32, or TF32)."""
    @torch.no_grad()
    def run() -> None:
        with fp32_precision(tf32):
            for _ in range(time_steps):
                model(x)

    return run


def bench_engine(
    device: torch.device,
    batch: int = 32,
    time_steps: int = 64,
    arch: str = "vgg8ab",
    with_bindsnet: bool = True,
    repeat: int = 2,
    with_spikingjelly: bool = False,
    binary: bool = False,
    width: float = 1.0,
) -> dict[str, Any]:
    """Engine vs the dense floor (float32, and TF32 on CUDA) vs SpikingJelly, timed in turns
    (best of `repeat`; every time kept under `times_s`), then bindsnet, on one converted
    network and batch. `binary`: the arch's binary form, converted with +-1 weights; `width`
    scales its widths."""
    torch.manual_seed(0)
    model = build_model(arch, 10, (3, 32, 32), binary=binary, width=width).to(device).eval()
    calib = [torch.randn(min(batch, 64), 3, 32, 32, device=device) for _ in range(2)]
    net = convert(model, lambda: calib, 99.7,
                  binary_weights="sign" if binary else "alpha").network
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    options = SimOptions(time=time_steps)
    engine = Engine(net, options)
    img_steps = batch * time_steps
    contenders = {"engine": lambda: engine.run_batch(x, y),
                  "dense": _dense(model, x, time_steps, tf32=False)}
    if device.type == "cuda":
        contenders["dense_tf32"] = _dense(model, x, time_steps, tf32=True)
    if with_spikingjelly:
        contenders["spikingjelly"] = spikingjelly_run(model, calib, x, time_steps, 99.7)

    result: dict[str, Any] = {"device": str(device), "arch": arch, "binary": binary,
                              "width": width, "batch": batch, "time_steps": time_steps}
    with PeakMemory(device) as ann_mem:
        contenders["dense"]()
    with PeakMemory(device) as engine_mem:
        engine.run_batch(x, y)
    times = timed_in_turns(contenders, device, repeat)
    best = {name: min(t) for name, t in times.items()}
    result.update(
        engine_img_steps_per_s=img_steps / best["engine"],
        dense_img_steps_per_s=img_steps / best["dense"],
        engine_over_dense_time=best["engine"] / best["dense"],
        engine_peak_mb=engine_mem.peak / 2**20,
        ann_peak_mb=ann_mem.peak / 2**20,
        times_s=times,
    )
    if "dense_tf32" in best:
        result.update(dense_tf32_img_steps_per_s=img_steps / best["dense_tf32"],
                      engine_over_dense_tf32_time=best["engine"] / best["dense_tf32"])
    if "spikingjelly" in best:
        result.update(spikingjelly_img_steps_per_s=img_steps / best["spikingjelly"],
                      engine_over_spikingjelly_speed=best["spikingjelly"] / best["engine"])
    if with_bindsnet:
        result.update(_versus_bindsnet(net, options, engine, x, y, device, best["engine"]))
    return result


def _versus_bindsnet(net: SpikingNetwork, options: SimOptions, engine: Engine, x: torch.Tensor,
                     y: torch.Tensor, device: torch.device, engine_s: float) -> dict[str, Any]:
    """bindsnet's speed (best of two) and its spike counts against the engine's."""
    from bsnn.backends.bindsnet import BindsnetBackend

    backend = BindsnetBackend(net, options)
    bindsnet_s = min(_once(lambda: backend.run_batch(x, y), device) for _ in range(2))
    ours, theirs = engine.run_batch(x, y), backend.run_batch(x, y)
    return {"bindsnet_img_steps_per_s": x.shape[0] * options.time / bindsnet_s,
            "engine_over_bindsnet_speed": bindsnet_s / engine_s,
            "spike_count_mismatch": int((ours.spikes - theirs.spikes).abs().sum())}
