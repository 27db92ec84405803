"""`bsnn bench engine`: its JSON carries the figures the benchmark promises, and its memory
meter sees an allocation of known size (the figures themselves are not asserted: they are
measurements, recorded in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bsnn.bench import PeakMemory
from bsnn.cli import main


def test_peak_memory_sees_a_known_allocation() -> None:
    with PeakMemory(torch.device("cpu")) as mem:
        block = torch.ones(10 * 2**20)  # 40 MiB, alive when the meter reads at exit
    assert 40 <= mem.peak / 2**20 < 48
    del block
    with PeakMemory(torch.device("cpu")) as idle:
        pass
    assert idle.peak / 2**20 < 4


def test_bench_engine_quick_writes_every_figure(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main(["bench", "engine", "--quick", "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    for key in ("engine_img_steps_per_s", "bindsnet_img_steps_per_s", "dense_img_steps_per_s",
                "engine_over_dense_time", "engine_over_bindsnet_speed", "engine_peak_mb",
                "ann_peak_mb", "calibration_s", "calibration_peak_mb"):
        assert figures[key] > 0, key
    assert figures["spike_count_mismatch"] == 0  # the engine and bindsnet agree spike for spike
    assert figures["calibration_peak_mb"] < figures["calibration_tensor_mb"]  # no full copy
