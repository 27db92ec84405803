"""The Python half of benchmarks/gpu_check.sh: CUDA against CPU, the timings, the report.

    python benchmarks/gpu_check.py compare --device cuda --out OUTDIR [--quick]
    python benchmarks/gpu_check.py bench --device cuda --out OUTDIR [--quick]
    python benchmarks/gpu_check.py int8 --device cuda --out OUTDIR [--quick]
    python benchmarks/gpu_check.py report --out OUTDIR

`compare` runs the same converted networks (the bundled models, a random-weight vgg15ab in its
full-precision and binary forms) on the device and on the CPU in float32 and counts where the
per-step correct predictions and the per-layer spike counts differ. `bench` times the engine, the
dense floor (float32 and TF32), SpikingJelly (when installed) and bindsnet with
`bsnn.bench.bench_engine`. `int8` times the CUDA int8 candidate against the exact float16 path
(benchmarks/int8_mm.py). `report` gathers every step's output into results.json and
results.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import torch

import bsnn
from bsnn.bench import bench_engine, has_spikingjelly
from bsnn.conversion import convert
from bsnn.data import load_split, normalization
from bsnn.models import build_model
from bsnn.snn.engine import Engine, HalfCurrent
from bsnn.snn.network import SpikingNetwork
from bsnn.snn.options import SimOptions

sys.path.insert(0, str(Path(__file__).resolve().parent))
from int8_mm import int8_layers, int8_table  # a benchmark of its own, beside this file


def _counts(net: SpikingNetwork, x: torch.Tensor, y: torch.Tensor, device: torch.device,
            time: int, precision: str, batch: int) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """Correct predictions per step and spikes per layer and step over all of `x`, and
    whether any layer took the exact float16 path."""
    engine = Engine(net.to(device), SimOptions(time, precision=precision))
    correct, spikes = torch.zeros(time, dtype=torch.long), None
    for i in range(0, len(x), batch):
        c = engine.run_batch(x[i:i + batch].to(device), y[i:i + batch].to(device), i // batch)
        correct += c.correct.cpu()
        spikes = c.spikes.cpu() if spikes is None else spikes + c.spikes.cpu()
    half = any(isinstance(f, HalfCurrent) for f in engine.currents(x.to(device).device))
    assert spikes is not None
    return correct, spikes, half


def _compare_one(name: str, net: SpikingNetwork, x: torch.Tensor, y: torch.Tensor,
                 device: torch.device, time: int, batch: int) -> list[dict[str, Any]]:
    """The device (its default precision, then float32) against the CPU in float32. On the
    CPU, whose default is float32, the exact float16 path is compared instead."""
    ref_correct, ref_spikes, _ = _counts(net, x, y, torch.device("cpu"), time, "fp32", batch)
    rows = []
    for precision in ("fp16" if device.type == "cpu" else "auto", "fp32"):
        correct, spikes, half = _counts(net, x, y, device, time, precision, batch)
        rows.append({
            "network": name, "precision": precision, "float16_layers": half,
            "images": len(x), "time_steps": time,
            "final_accuracy_device": float(correct[-1]) / len(x),
            "final_accuracy_cpu": float(ref_correct[-1]) / len(x),
            "steps_with_other_accuracy": int((correct != ref_correct).sum()),
            "max_correct_difference": int((correct - ref_correct).abs().max()),
            "spike_mismatch": float((spikes - ref_spikes).abs().sum()),
            "spikes_cpu": float(ref_spikes.sum()),
        })
    return rows


def _bundled(quick: bool) -> list[tuple[str, SpikingNetwork, torch.Tensor, torch.Tensor]]:
    """The bundled digits models (the binary one in both weight forms) and their val images."""
    images, _ = load_split("digits", "val", normalize=normalization("digits"))
    n = 32 if quick else len(images)
    x = torch.stack([images[i][0] for i in range(n)])
    y = torch.tensor([images[i][1] for i in range(n)])
    nets = []
    for model, weights in (("digits-fp", "alpha"), ("digits-binary", "alpha"),
                           ("digits-binary", "sign")):
        snn = bsnn.convert(f"bundled:{model}", "digits", device="cpu", binary_weights=weights,
                           norm=16 if quick else 128)
        nets.append((f"{model} ({weights})", snn.network, x, y))
    return nets


def _random_vgg15(binary: bool, n: int, width: float,
                  calib_batch: int) -> tuple[str, SpikingNetwork, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = build_model("vgg15ab", 100, (3, 32, 32), binary=binary, width=width).eval()
    calib = [torch.randn(calib_batch, 3, 32, 32) for _ in range(2)]
    net = convert(model, lambda: calib, 99.7, binary_weights="sign" if binary else "alpha")
    x = torch.randn(n, 3, 32, 32)
    with torch.no_grad():
        y = model(x).argmax(1)
    return (f"random vgg15ab ({'binary, sign' if binary else 'fp'})", net.network, x, y)


def compare(device: torch.device, quick: bool) -> list[dict[str, Any]]:
    time, batch, n, width, calib = (8, 16, 4, 0.0625, 8) if quick else (64, 128, 64, 1.0, 16)
    cases = [*_bundled(quick), *(_random_vgg15(b, n, width, calib) for b in (False, True))]
    rows = []
    for name, net, x, y in cases:
        rows += _compare_one(name, net, x, y, device, time, batch)
        print(f"compared {name}: spike mismatch {[r['spike_mismatch'] for r in rows[-2:]]}")
    return rows


def bench(device: torch.device, quick: bool) -> list[dict[str, Any]]:
    """vgg15ab at 32x32: the full-precision net against every contender at each batch, then
    its binary form (+-1 weights, the float16 path on CUDA) against the dense floor. Quick:
    the same depth at an eighth of the width, batch 2, T=4."""
    sj = has_spikingjelly()
    batches, time, repeat, width = ((2,), 4, 1, 0.125) if quick else ((256, 1024), 256, 2, 1.0)
    if device.type == "cpu" and not quick:
        batches, time = (32,), 64  # a CPU would take hours at the GPU's sizes
    runs = []
    for b in batches:
        runs.append(bench_engine(device, batch=b, time_steps=time, arch="vgg15ab",
                                 repeat=repeat, with_spikingjelly=sj, width=width))
        print(f"timed batch {b}: {runs[-1]['times_s']}")
    runs.append(bench_engine(device, batch=batches[0], time_steps=time, arch="vgg15ab",
                             repeat=repeat, with_bindsnet=False, binary=True, width=width))
    return runs


DASHBOARD = re.compile(r"^(headless \([\w.]+\)|dashboard, engine \S+)\s+([\d.]+) images/s")


def dashboard(log: Path) -> dict[str, float]:
    """Images/s per mode from bench_tui.py's throughput lines."""
    if not log.exists():
        return {}
    return {m.group(1): float(m.group(2)) for line in log.read_text().splitlines()
            if (m := DASHBOARD.match(line.strip()))}


def _read(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _bench_table(runs: list[dict[str, Any]]) -> list[str]:
    lines = ["| net | batch | T | engine | dense fp32 | dense TF32 | SpikingJelly | bindsnet "
             "| engine/dense time | engine/SJ speed | engine peak MB | ANN peak MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(" | ".join([
            f"| {r['arch']}{' binary' if r['binary'] else ''}", str(r["batch"]),
            str(r["time_steps"]), _fmt(r.get("engine_img_steps_per_s"), ",.0f"),
            _fmt(r.get("dense_img_steps_per_s"), ",.0f"),
            _fmt(r.get("dense_tf32_img_steps_per_s"), ",.0f"),
            _fmt(r.get("spikingjelly_img_steps_per_s"), ",.0f"),
            _fmt(r.get("bindsnet_img_steps_per_s"), ",.0f"),
            _fmt(r.get("engine_over_dense_time"), ".2f"),
            _fmt(r.get("engine_over_spikingjelly_speed"), ".2f"),
            _fmt(r.get("engine_peak_mb"), ",.0f"), _fmt(r.get("ann_peak_mb"), ",.0f")]) + " |")
    return lines


def report(out: Path) -> dict[str, Any]:
    """results.json and results.md from the steps' files in `out`."""
    tests = out / "tests.log"
    results = {
        "meta": _read(out / "meta.json"),
        "tests": {"exit_code": _read(out / "tests.rc"),
                  "summary": tests.read_text().strip().splitlines()[-1:] if tests.exists()
                  else []},
        "compare": _read(out / "compare.json"),
        "bench": _read(out / "bench.json"),
        "int8": _read(out / "int8.json"),
        "dashboard_images_per_s": dashboard(out / "dashboard.log"),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    md = [f"# gpu_check: {json.dumps(results['meta'])}", "",
          f"tests: exit {results['tests']['exit_code']}, {' '.join(results['tests']['summary'])}",
          "", "## device against CPU float32 (per-step correct, spike counts)", "",
          "| network | precision | float16 layers | images | T | accuracy device / CPU "
          "| steps differing | spike mismatch / CPU spikes |", "|---|---|---|---|---|---|---|---|"]
    for r in results["compare"] or []:
        md.append(f"| {r['network']} | {r['precision']} | {r['float16_layers']} | {r['images']} "
                  f"| {r['time_steps']} | {r['final_accuracy_device']:.4f} / "
                  f"{r['final_accuracy_cpu']:.4f} | {r['steps_with_other_accuracy']} "
                  f"| {r['spike_mismatch']:.0f} / {r['spikes_cpu']:.0f} |")
    md += ["", "## timings, img·steps/s (best of the rounds, timed in turns)", ""]
    md += _bench_table(results["bench"] or [])
    md += ["", "## +-1 convs: the CUDA int8 candidate against exact float16 (best ms)", ""]
    md += int8_table(results["int8"] or [])
    md += ["", "## dashboard throughput, images/s", ""]
    md += [f"- {mode}: {speed:.1f}" for mode, speed in results["dashboard_images_per_s"].items()]
    (out / "results.md").write_text("\n".join(md) + "\n")
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", choices=("compare", "bench", "int8", "report"))
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    if args.step == "report":
        report(args.out)
        return 0
    device = torch.device(args.device)
    steps = {"compare": compare, "bench": bench, "int8": int8_layers}
    rows = steps[args.step](device, args.quick)
    (args.out / f"{args.step}.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
