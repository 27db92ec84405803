"""`bsnn bench engine`: its JSON carries the figures the benchmark promises, and its memory
meter sees an allocation of known size (the figures themselves are not asserted: they are
measurements, recorded in benchmarks/RESULTS.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bsnn.bench import PeakMemory, has_spikingjelly, timed_in_turns
from bsnn.cli import main
from bsnn.snn.int8 import int8_unavailable


def test_peak_memory_sees_a_known_allocation() -> None:
    with PeakMemory(torch.device("cpu")) as mem:
        block = torch.ones(10 * 2**20)  # 40 MiB, alive when the meter reads at exit
    assert 39.5 <= mem.peak / 2**20 < 48  # a few KiB freed earlier may be reused
    del block
    with PeakMemory(torch.device("cpu")) as idle:
        pass
    assert idle.peak / 2**20 < 4


MEASURED = ("engine_img_steps_per_s", "bindsnet_img_steps_per_s", "dense_img_steps_per_s",
            "engine_over_dense_time", "engine_over_bindsnet_speed", "engine_peak_mb",
            "ann_peak_mb", "calibration_s", "calibration_peak_mb")


def test_bench_engine_quick_writes_every_figure(tmp_path: Path) -> None:
    """Every promised figure is there, the run is the one asked for (CPU, vgg8ab, --quick's
    batch 8 and T=16), the ratios are those of the rates they come from, and the engine and
    bindsnet agree spike for spike."""
    out = tmp_path / "bench.json"
    assert main(["bench", "engine", "--quick", "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    cpu = {k: v for k, v in figures.items() if k != "devices"}
    assert set(cpu) == {"device", "arch", "binary", "width", "batch", "time_steps", "times_s",
                        "spike_count_mismatch", "calibration_tensor_mb", *MEASURED}
    assert set(cpu["times_s"]) == {"engine", "dense"}
    assert (cpu["device"], cpu["arch"], cpu["batch"], cpu["time_steps"]) == ("cpu", "vgg8ab", 8, 16)
    assert figures["devices"][0] == cpu
    assert [d["device"] for d in figures["devices"]] == ["cpu"] + (
        ["cuda"] if torch.cuda.is_available() else [])
    for key in MEASURED:
        assert math.isfinite(cpu[key]) and cpu[key] > 0, (key, cpu[key])
    engine, dense = cpu["engine_img_steps_per_s"], cpu["dense_img_steps_per_s"]
    assert cpu["engine_over_dense_time"] == pytest.approx(dense / engine, rel=1e-9)
    assert cpu["engine_over_bindsnet_speed"] == pytest.approx(
        engine / cpu["bindsnet_img_steps_per_s"], rel=1e-9)
    assert cpu["spike_count_mismatch"] == 0  # the engine and bindsnet agree spike for spike
    assert cpu["calibration_tensor_mb"] == 32 * 64 * 112 * 112 * 4 / 2**20  # 98 MB, float32
    assert cpu["calibration_peak_mb"] < cpu["calibration_tensor_mb"]  # no full copy


def test_contenders_are_timed_in_turns() -> None:
    """Each round runs every contender once, in order, after one warm-up each."""
    calls: list[str] = []
    times = timed_in_turns({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")},
                           torch.device("cpu"), repeat=3)
    assert calls == ["a", "b"] * 4
    assert [len(t) for t in times.values()] == [3, 3]


@pytest.mark.skipif(not has_spikingjelly(), reason="SpikingJelly (the bench extra) is not "
                    "installed")
def test_bench_engine_with_spikingjelly(tmp_path: Path) -> None:
    """SpikingJelly is timed in turns with the engine on the same network, batch and T."""
    out = tmp_path / "bench.json"
    assert main(["bench", "engine", "--quick", "--no-bindsnet", "--spikingjelly",
                 "--device", "cpu", "--out", str(out)]) == 0
    cpu = json.loads(out.read_text())
    assert set(cpu["times_s"]) == {"engine", "dense", "spikingjelly"}
    assert cpu["engine_over_spikingjelly_speed"] == pytest.approx(
        cpu["engine_img_steps_per_s"] / cpu["spikingjelly_img_steps_per_s"], rel=1e-9)
    assert len(cpu["devices"]) == 1


def test_bench_engine_precisions_agree(tmp_path: Path) -> None:
    """--precisions adds an engine per precision, timed in turns; their counts are compared."""
    out = tmp_path / "bench.json"
    assert main(["bench", "engine", "--quick", "--no-bindsnet", "--binary", "--device", "cpu",
                 "--precisions", "fp32,fp16", "--out", str(out)]) == 0
    cpu = json.loads(out.read_text())
    assert set(cpu["times_s"]) == {"engine", "engine_fp32", "engine_fp16", "dense"}
    assert cpu["counts_identical"] is True
    assert cpu["engine_fp16_arithmetic"][1] == "fp16-exact"
    assert cpu["engine_fp32_over_dense_time"] == pytest.approx(
        cpu["dense_img_steps_per_s"] / cpu["engine_fp32_img_steps_per_s"], rel=1e-9)


def test_bench_suite_quick(tmp_path: Path) -> None:
    """--suite: binary and full-precision vgg15ab, each a column of figures; int8 where the
    machine has it, with its counts equal to float32's."""
    out = tmp_path / "suite.json"
    assert main(["bench", "engine", "--suite", "--quick", "--device", "cpu",
                 "--out", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert {"cpu", "int8_unit", "torch", "threads"} <= set(figures["machine"])
    rows = figures["devices"]["cpu"]
    assert [(r["binary"], r["arch"]) for r in rows] == [(True, "vgg15ab"), (False, "vgg15ab")]
    binary, full = rows
    assert "engine_int8_img_steps_per_s" not in full
    if int8_unavailable(torch.device("cpu")) is None:
        assert binary["counts_identical"] is True
        assert binary["engine_int8_arithmetic"][1] == "int8-exact"
        assert binary["int8_weights_mb"] > 0
    for row in rows:
        assert row["ann_peak_mb"] > 0 and row["engine_fp32_peak_mb"] > 0
