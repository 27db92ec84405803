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
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch
from torch import nn

from bsnn.conversion import convert
from bsnn.conversion.percentile import StreamingPercentile
from bsnn.models import build_model
from bsnn.models.binary import BinaryLayer
from bsnn.snn.engine import BatchCounts, Engine, flush_denormals, fp32_precision
from bsnn.snn.int8 import Int8Conv, Int8Linear, cpu_int8_unit, int8_unavailable
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


def plain_float(model: nn.Module) -> nn.Module:
    """A copy of `model` whose binary layers are plain conv / linear layers holding their
    effective weights (sign(W) x alpha): the ANN as deployed, which does not binarise its
    weights again at every call. The dense floor and SpikingJelly run this one."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if not isinstance(child, BinaryLayer):
                continue
            plain = (nn.Conv2d(child.in_channels, child.out_channels, child.kernel_size,
                               child.stride, child.padding, child.dilation, child.groups,
                               child.bias is not None) if isinstance(child, nn.Conv2d)
                     else nn.Linear(child.in_features, child.out_features, child.bias is not None))
            with torch.no_grad():
                plain.weight.copy_(child.binary_weight())
                if child.bias is not None:
                    plain.bias.copy_(child.bias)
            setattr(parent, name, plain.to(child.weight.device).eval())
    return model


def _dense(model: nn.Module, x: torch.Tensor, time_steps: int,
           tf32: bool) -> Callable[[], None]:
    """The dense floor: the ANN run T times on the same batch (IEEE float32, or TF32)."""
    @torch.no_grad()
    def run() -> None:
        with fp32_precision(tf32), flush_denormals():
            for _ in range(time_steps):
                model(x)

    return run


def _int8_weight_mb(engine: Engine, device: torch.device) -> float:
    """Bytes of the int8 weights an engine packed (once per network), in MB."""
    total = 0
    for current in engine.currents(device):
        for op in getattr(current, "ops", ()):
            if isinstance(op, Int8Conv | Int8Linear):
                total += op.weight_bytes()
    return total / 2**20


def _same_counts(a: BatchCounts, b: BatchCounts) -> bool:
    return all(torch.equal(p, q) for p, q in ((a.correct, b.correct), (a.spikes, b.spikes),
                                                (a.synops, b.synops)))


def _engines(net: SpikingNetwork, options: SimOptions, x: torch.Tensor, y: torch.Tensor,
             precisions: tuple[str, ...],
             auto: bool = True) -> tuple[dict[str, Engine], dict[str, Any]]:
    """The engine (`auto`) and one per precision asked for, each run once (which also builds
    what it makes once per network), their per-batch peak memory measured on a second run,
    and whether every precision's counts equal the first one's, bit for bit."""
    engines = {"engine": Engine(net, options)} if auto else {}
    engines.update({f"engine_{p}": Engine(net, replace(options, precision=p))
                    for p in precisions})
    counts = {name: e.run_batch(x, y) for name, e in engines.items()}
    figures: dict[str, Any] = {}
    for name, engine in engines.items():
        with PeakMemory(x.device) as mem:
            engine.run_batch(x, y)
        figures[f"{name}_peak_mb"] = mem.peak / 2**20
        if name != "engine":
            figures[f"{name}_arithmetic"] = engine.arithmetic(x.device)
    if precisions:
        first = counts[f"engine_{precisions[0]}"]
        figures["counts_identical"] = all(_same_counts(first, c) for c in counts.values())
        figures["spikes_total"] = float(first.spikes.sum())
    if "int8" in precisions:
        figures["int8_weights_mb"] = _int8_weight_mb(engines["engine_int8"], x.device)
    return engines, figures


def _ratios(best: dict[str, float], img_steps: int) -> dict[str, float]:
    """Rates of every contender, and each engine's time over the dense floors' and speed over
    SpikingJelly's."""
    out = {f"{name}_img_steps_per_s": img_steps / s for name, s in best.items()}
    for name in (n for n in best if n.startswith("engine")):
        out[f"{name}_over_dense_time"] = best[name] / best["dense"]
        if "dense_tf32" in best:
            out[f"{name}_over_dense_tf32_time"] = best[name] / best["dense_tf32"]
        if "spikingjelly" in best:
            out[f"{name}_over_spikingjelly_speed"] = best["spikingjelly"] / best[name]
    if "engine_fp32" in best and "engine_int8" in best:
        out["int8_over_fp32_speed"] = best["engine_fp32"] / best["engine_int8"]
    return out


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
    precisions: tuple[str, ...] = (),
    auto: bool = True,
) -> dict[str, Any]:
    """Engine vs the dense floor (float32, and TF32 on CUDA) vs SpikingJelly, timed in turns
    (best of `repeat`; every time kept under `times_s`), then bindsnet, on one converted
    network and batch. `binary`: the arch's binary form, converted with +-1 weights (the
    floor and SpikingJelly run its effective float32 weights); `width` scales its widths;
    `precisions` adds an engine per precision (`engine_fp32`, ...) beside `auto`'s (none
    where `auto` is False), with its peak memory and whether all their counts are the same."""
    torch.manual_seed(0)
    model = build_model(arch, 10, (3, 32, 32), binary=binary, width=width).to(device).eval()
    calib = [torch.randn(min(batch, 64), 3, 32, 32, device=device) for _ in range(2)]
    net = convert(model, lambda: calib, 99.7,
                  binary_weights="sign" if binary else "alpha").network
    x = torch.randn(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    options = SimOptions(time=time_steps)
    floor = plain_float(model)
    engines, figures = _engines(net, options, x, y, precisions, auto)
    contenders: dict[str, Callable[[], Any]] = {
        name: (lambda e=e: e.run_batch(x, y)) for name, e in engines.items()}
    contenders["dense"] = _dense(floor, x, time_steps, tf32=False)
    if device.type == "cuda":
        contenders["dense_tf32"] = _dense(floor, x, time_steps, tf32=True)
    if with_spikingjelly:
        contenders["spikingjelly"] = spikingjelly_run(floor, calib, x, time_steps, 99.7)
    result: dict[str, Any] = {"device": str(device), "arch": arch, "binary": binary,
                              "width": width, "batch": batch, "time_steps": time_steps}
    with PeakMemory(device) as ann_mem:
        contenders["dense"]()
    times = timed_in_turns(contenders, device, repeat)
    best = {name: min(t) for name, t in times.items()}
    result.update(_ratios(best, batch * time_steps), ann_peak_mb=ann_mem.peak / 2**20,
                  times_s=times, **figures)
    if with_bindsnet:
        result.update(_versus_bindsnet(net, options, engines["engine"], x, y, device,
                                       best["engine"]))
    return result


def machine() -> dict[str, Any]:
    """What the figures were measured on: the CPU's model, its int8 unit, torch, threads."""
    model = platform.processor()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        model = next((line.split(":", 1)[1].strip() for line in f
                      if line.startswith("model name")), model)
    return {"cpu": model, "int8_unit": cpu_int8_unit(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "threads": torch.get_num_threads()}


def bench_suite(device: torch.device, repeat: int = 3, time_steps: int = 32,
                batches: tuple[int, ...] = (16, 32), width: float = 1.0,
                with_spikingjelly: bool = False) -> list[dict[str, Any]]:
    """The precision suite on vgg15ab: its binary form (+-1, sign mode) with the engine's
    float32 and int8 paths (int8 where this machine has it), and its full-precision form with
    float32, against the dense floor and SpikingJelly, at each batch; one `bench_engine` row
    each, in turns within a row."""
    int8 = int8_unavailable(device) is None
    rows = []
    for binary in (True, False):
        precisions = ("fp32", "int8") if binary and int8 else ("fp32",)
        for batch in batches:
            rows.append(bench_engine(device, batch, time_steps, "vgg15ab", with_bindsnet=False,
                                     repeat=repeat, with_spikingjelly=with_spikingjelly,
                                     binary=binary, width=width, precisions=precisions,
                                     auto=False))
    return rows


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
