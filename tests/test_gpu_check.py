"""benchmarks/gpu_check.sh, the one prepared device check, runs here small (`--device cpu
--quick`) so that it cannot rot between the times a GPU is lent; its report parser is checked
on bench_tui.py's own output lines."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


def _helper(name: str = "gpu_check"):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dashboard_lines_are_read(tmp_path: Path) -> None:
    log = tmp_path / "dashboard.log"
    log.write_text("spawn -> first paint            0.489 s\n"
                   "headless (bsnn.pipeline.runner.run)               95.9 images/s\n"
                   "dashboard, engine in-process          84.9 images/s    88.5% of headless\n"
                   "dashboard, engine detached            76.0 images/s    79.2% of headless\n")
    assert _helper().dashboard(log) == {"headless (bsnn.pipeline.runner.run)": 95.9,
                                        "dashboard, engine in-process": 84.9,
                                        "dashboard, engine detached": 76.0}


def test_gpu_check_quick_on_cpu(tmp_path: Path) -> None:
    """Every step ends well and lands in results.json and results.md."""
    out = tmp_path / "out"
    done = subprocess.run(["bash", str(SCRIPT), str(out), "--device", "cpu", "--quick"],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHON": sys.executable})
    logs = {p.name: p.read_text()[-2000:] for p in out.glob("*.log")}
    assert done.returncode == 0, (done.stdout, logs)
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["device"] == "cpu"
    assert results["tests"]["exit_code"] == 0
    networks = {r["network"] for r in results["compare"]}
    assert {"digits-fp (alpha)", "digits-binary (sign)", "random vgg15ab (fp)",
            "random vgg15ab (binary, sign)"} <= networks
    for row in results["compare"]:  # float16 and float32 on the CPU: nothing may differ
        assert row["spike_mismatch"] == 0 and row["steps_with_other_accuracy"] == 0, row
        assert row["spikes_cpu"] > 0, row
        assert row["float16_layers"] == (row["precision"] == "fp16" and "sign" in row["network"])
    bench = results["bench"]
    assert [(r["arch"], r["binary"]) for r in bench] == [("vgg15ab", False), ("vgg15ab", True)]
    assert bench[0]["spike_count_mismatch"] == 0
    assert all(r["engine_img_steps_per_s"] > 0 and r["dense_img_steps_per_s"] > 0 for r in bench)
    assert set(results["dashboard_images_per_s"]) == {
        "headless (bsnn.pipeline.runner.run)", "dashboard, engine in-process",
        "dashboard, engine detached"}
    int8 = results["int8"]
    assert len(int8) == 12 and all(r["int8_exact"] and r["fp16_exact"] for r in int8), int8
    md = (out / "results.md").read_text()
    assert "| digits-binary (sign) | fp16 | True |" in md and "| vgg15ab binary | 2 | 4 |" in md
    assert "int8 speed / float16 speed: " in md


def test_int8_candidate_gives_float32_sums() -> None:
    """The CUDA int8 candidate (im2col + torch._int_mm) on odd shapes: stride, padding, a fan-in
    that is no multiple of 8 (padded) and one above 2^11, against the float32 conv."""
    IntMMConv = _helper("int8_mm").IntMMConv
    g = torch.Generator().manual_seed(4)
    for c_in, c_out, k, stride, padding, size in ((3, 5, 3, 2, 1, (9, 7)),
                                                   (250, 8, 3, 1, 0, (6, 5))):
        conv = nn.Conv2d(c_in, c_out, k, stride, padding, bias=False)
        conv.weight.data = torch.randint(0, 2, conv.weight.shape, generator=g).float() * 2 - 1
        spikes = (torch.rand(2, c_in, *size, generator=g) < 0.5).float()
        with torch.no_grad():
            assert torch.equal(IntMMConv(conv)(spikes), conv(spikes))
