"""Low-latency switches: each one's mechanics, and that it changes what it should on the bundled
digits models (real data); plus `bsnn sweep`, which runs them as a grid."""

from __future__ import annotations

import copy
import csv
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import bsnn.pipeline.sources
from bsnn.checkpoint import load_model
from bsnn.cli import main
from bsnn.config import RunConfig
from bsnn.conversion import convert
from bsnn.conversion.correction import correct_errors
from bsnn.data import calibration_subset, load_split
from bsnn.errors import ConfigError
from bsnn.jobdir import list_runs
from bsnn.pipeline.runner import run
from bsnn.snn.engine import Engine
from bsnn.snn.network import SpikingLayer, SpikingNetwork
from bsnn.snn.options import SimOptions
from bsnn.sweep import grid, parse_variant, sweep
from bsnn.sweep_record import SweepRecord


def _run(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    kw.setdefault("time", 8)
    kw.setdefault("propagation", "same-step")  # the latency switches' timing
    return run(RunConfig(model=kw.pop("model", "bundled:digits-fp"), job_dir=str(tmp_path),
                         batch_size=180, **kw))


@pytest.fixture(scope="module")
def digits_conversion() -> tuple[Any, list[torch.Tensor]]:
    """The bundled FP model converted on 128 training images; 256 others to calibrate on."""
    model, _ = load_model("bundled:digits-fp")
    train, _ = load_split("digits", "train")
    x = torch.stack([train[i][0] for i in range(len(train))])
    calib = [x[:128]]
    conversion = convert(model, lambda: calib)
    return conversion, [x[128:256], x[256:384]]


# ----------------------------------------------------------------------------- initial potential

def test_v0_half_starts_at_half_threshold_and_raises_early_accuracy(tmp_path: Path) -> None:
    zero = _run(tmp_path, time=4)
    half = _run(tmp_path, time=4, v0="half")
    assert half["ann_accuracy"] == zero["ann_accuracy"]
    # the paper's method is near chance at T=4 on digits; theta/2 rounds instead of flooring
    assert half["accuracy_per_step"][3] > zero["accuracy_per_step"][3] + 0.2
    assert half["first_step_within_1pt"] < (zero["first_step_within_1pt"] or 5)


# ----------------------------------------------------------------------------- SNN calibration

def test_bias_calibration_shrinks_each_layers_error(digits_conversion: Any) -> None:
    conversion, batches = digits_conversion
    net = copy.deepcopy(conversion.network)
    opt = SimOptions(time=8)
    before = correct_errors(net, conversion.ann, lambda: batches, opt, "bias")
    after = correct_errors(copy.deepcopy(net), conversion.ann, lambda: batches, opt, "bias")
    assert len(before) == len(net.spiking)
    for b, a in zip(before, after, strict=True):
        assert a < b, (before, after)
    untouched = conversion.network.spiking
    for layer, old in zip(net.spiking, untouched, strict=True):
        assert layer.v_init is None
        shift = layer.bias - (0 if old.bias is None else old.bias)
        assert shift.shape[0] == layer.shape[0] and shift.numel() == layer.shape[0]  # per channel


def test_potential_calibration_gives_the_same_charge_at_once(digits_conversion: Any) -> None:
    """The first layer's error is measured before any correction, so both modes see the same
    e; bias adds theta*e per step, potential T*theta*e once."""
    conversion, batches = digits_conversion
    T = 8
    by_bias, by_potential = (copy.deepcopy(conversion.network) for _ in range(2))
    correct_errors(by_bias, conversion.ann, lambda: batches, SimOptions(time=T), "bias")
    correct_errors(by_potential, conversion.ann, lambda: batches, SimOptions(time=T),
                   "potential")
    first, orig = by_bias.spiking[0], conversion.network.spiking[0]
    shift = first.bias - (0 if orig.bias is None else orig.bias)
    assert torch.allclose(by_potential.spiking[0].v_init, T * shift, rtol=1e-5, atol=1e-7)
    assert all(a.bias is b.bias or torch.equal(a.bias, b.bias) for a, b in
               zip(by_potential.spiking, conversion.network.spiking, strict=True))
    # the engine starts from it
    x = batches[0][:4]
    labels = torch.zeros(4, dtype=torch.long)
    plain = Engine(conversion.network, SimOptions(time=1)).run_batch(x, labels, keep_totals=True)
    pushed = Engine(by_potential, SimOptions(time=1)).run_batch(x, labels, keep_totals=True)
    assert not torch.equal(plain.totals[0], pushed.totals[0])


@pytest.mark.parametrize("mode", ["bias", "potential"])
def test_calibration_raises_accuracy_at_small_t(tmp_path: Path, mode: str) -> None:
    plain = _run(tmp_path, time=8)
    calibrated = _run(tmp_path, time=8, snn_calibration=mode)
    assert calibrated["accuracy_per_step"][-1] > plain["accuracy_per_step"][-1] + 0.02
    spiking = [row for row in calibrated["layers"] if row["threshold"] is not None]
    assert all(row["calibration_error"] > 0 for row in spiking)
    assert all(row["calibration_error"] is None for row in plain["layers"])


def test_unknown_calibration_is_refused() -> None:
    with pytest.raises(ConfigError, match="snn_calibration"):
        RunConfig(snn_calibration="full").validate()
    with pytest.raises(ConfigError, match="snn_calibration_size"):
        RunConfig(snn_calibration="bias", snn_calibration_size=0).validate()


def test_calibration_images_are_drawn_apart_from_the_threshold_images(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run draws its threshold images with the seed and the SNN calibration's with seed + 1:
    the correction is not measured on the threshold images alone."""
    drawn: list[tuple[int, int, list[int]]] = []

    def spy(dataset: Any, n: int, seed: int = 0) -> Any:
        subset = calibration_subset(dataset, n, seed=seed)
        drawn.append((n, seed, subset.indices))  # type: ignore[attr-defined]
        return subset

    monkeypatch.setattr(bsnn.pipeline.sources, "calibration_subset", spy)
    _run(tmp_path, time=4, seed=5, norm=128, snn_calibration="bias", snn_calibration_size=128)
    assert sorted((n, seed) for n, seed, _ in drawn) == [(128, 5), (128, 6)]
    assert drawn[0][2] != drawn[1][2]


# ----------------------------------------------------------------------------- readout delay

def _delay_net() -> SpikingNetwork:
    """x -> one neuron that fires every step -> two outputs: the spikes push class 0 (weight 4),
    a bias pushes class 1 (1.5). With delayed propagation the spikes reach the output from step
    3 on (input -> fc1 -> out, one step each), so the early sums are the bias alone: wrong."""
    hidden = nn.Linear(1, 1, bias=False)
    hidden.weight.data.fill_(1.0)
    out = nn.Linear(1, 2, bias=False)
    out.weight.data = torch.tensor([[4.0], [0.0]])
    layers = [
        SpikingLayer(name="fc1", kind="linear", ops=nn.Sequential(nn.Flatten(), hidden),
                     bias=None, threshold=torch.tensor(1.0), lam=torch.tensor(1.0), shape=(1,),
                     fan_out=torch.tensor([1.0])),
        SpikingLayer(name="out", kind="linear", ops=nn.Sequential(out),
                     bias=torch.tensor([0.0, 1.5]), threshold=None, lam=None, shape=(2,)),
    ]
    return SpikingNetwork(layers, (1, 1, 1), 99.7, "layer")


def test_readout_delay_ignores_the_first_steps() -> None:
    x, labels = torch.ones(1, 1, 1, 1), torch.tensor([0])
    net = _delay_net()
    plain = Engine(net, SimOptions(time=6, propagation="delayed")).run_batch(x, labels)
    # sums: (0, 1.5) (0, 3) (4, 4.5) (8, 6) (12, 7.5) ...: class 1 until step 3
    assert plain.correct.tolist() == [0, 0, 0, 1, 1, 1]
    late = Engine(net, SimOptions(time=6, propagation="delayed", readout_delay=2)).run_batch(
        x, labels)
    # from step 3 on the sum is (4, 1.5) (8, 3) ...: right at once
    assert late.correct[2:].tolist() == [1, 1, 1, 1]
    assert torch.equal(late.spikes, plain.spikes)  # only the readout changes


def test_readout_delay_flag_reaches_the_run(tmp_path: Path) -> None:
    code = main(["convert", "--model", "bundled:digits-fp", "--time", "8", "--eval_size", "64",
                 "--readout-delay", "3", "--one-step", "--job-dir", str(tmp_path), "--quiet"])
    assert code == 0
    ((_, summary),) = ((r.run_dir, r.summary) for r in list_runs(tmp_path))
    assert summary["config"]["readout_delay"] == 3
    # the engine read nothing in the first 3 steps: every image got the same (first) class
    acc = summary["accuracy_per_step"]
    assert acc[0] == acc[1] == acc[2] < 0.2 < acc[-1]
    with pytest.raises(ConfigError, match="readout delay"):
        RunConfig(time=8, readout_delay=8).validate()


# ----------------------------------------------------------------------------- reset, thresholds

def _mean_rate(summary: dict[str, Any]) -> float:
    layers = summary["layers"]
    return sum(x["firing_rate"] * x["neurons"] for x in layers if x["firing_rate"] is not None) \
        / sum(x["neurons"] for x in layers if x["firing_rate"] is not None)


def test_reset_to_zero_loses_the_residual_charge(tmp_path: Path) -> None:
    subtract = _run(tmp_path, time=16)
    zero = _run(tmp_path, time=16, reset="zero")
    assert _mean_rate(zero) < _mean_rate(subtract)


def test_lower_percentile_lowers_thresholds_and_raises_firing(tmp_path: Path) -> None:
    high = _run(tmp_path, time=16, percentile=99.99)
    low = _run(tmp_path, time=16, percentile=90.0)
    for a, b in zip(low["layers"], high["layers"], strict=True):
        if a["lam"] is not None:  # the percentile value; theta is a ratio of two of them
            assert a["lam"] < b["lam"]
    assert _mean_rate(low) > _mean_rate(high)


def test_channel_thresholds_wake_quiet_channels(tmp_path: Path) -> None:
    """Per-channel thresholds follow each channel's own percentile, so channels whose
    activations are small under a layer-wide threshold fire more."""
    layer = _run(tmp_path, time=16)
    channel = _run(tmp_path, time=16, threshold_granularity="channel")
    assert _mean_rate(channel) > _mean_rate(layer)
    spread = [x for x in channel["layers"] if x["threshold_min"] is not None]
    assert spread and all(x["threshold_min"] < x["threshold_max"] for x in spread)


# ----------------------------------------------------------------------------- sweep

def test_parse_variant() -> None:
    assert parse_variant("one-step").switches == {"propagation": "same-step"}
    assert parse_variant("original").switches == {"propagation": "delayed"}
    v = parse_variant("fast:v0=half,readout-delay=2,snn_calibration=bias")
    assert v.name == "fast"
    assert v.switches == {"v0": "half", "readout_delay": 2, "snn_calibration": "bias"}
    assert parse_variant("v0=half").name == "v0=half"
    with pytest.raises(ConfigError, match="not a switch"):
        parse_variant("model=other")
    with pytest.raises(ConfigError, match="not a switch"):
        parse_variant("nonsense")
    # values are typed and checked by the table of options; whole-config checks by the grid
    with pytest.raises(ConfigError, match="'bad:v0=quarter': v0 'quarter' is not known"):
        parse_variant("bad:v0=quarter")
    with pytest.raises(ConfigError, match="readout_delay 'two' is not a whole number"):
        parse_variant("readout_delay=two")
    with pytest.raises(ConfigError, match="readout delay 8 is outside"):
        grid(RunConfig(time=8), ["bundled:digits-fp"], [99.7], [parse_variant("readout-delay=8")])


def test_sweep_runs_the_grid_and_writes_the_table(tmp_path: Path) -> None:
    base = RunConfig(job_dir=str(tmp_path), time=8, batch_size=180, eval_size=180)
    rows, path = sweep(base, ["bundled:digits-fp", "bundled:digits-binary"], [99.7],
                       [parse_variant("one-step"), parse_variant("best")])
    assert len(rows) == 4 and path.is_file()
    assert path.with_suffix(".md").is_file() and path.with_suffix(".png").is_file()
    with open(path) as f:
        table = list(csv.DictReader(f))
    assert [r["variant"] for r in table] == ["one-step", "best", "one-step", "best"]
    for r in table:
        assert r["acc@16"] == ""  # beyond T
        assert 0 < float(r["acc@8"]) <= 100 and float(r["synops_per_image"]) > 0
    # the best combination beats the paper's method at T=4 on both models
    assert float(table[1]["acc@4"]) > float(table[0]["acc@4"])
    assert float(table[3]["acc@4"]) > float(table[2]["acc@4"])
    assert len(list_runs(tmp_path)) == 4  # ordinary runs: the runs screen overlays them


def test_sweep_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["sweep", "--time", "4", "--eval_size", "90", "--percentile", "99", "99.9",
                 "--variant", "one-step", "v0-half", "--job-dir", str(tmp_path)])
    assert code == 0
    assert "4 runs" in capsys.readouterr().out
    (path,) = tmp_path.glob("sweep-*.csv")
    assert len(path.read_text().splitlines()) == 5
    # its record names every cell's run folder (decided up front) and rebuilds the table
    record = SweepRecord.load(path.with_suffix(".json"))
    assert [c.run_id for c in record.cells] == [f"{record.sweep_id}-{i}" for i in range(4)]
    assert sorted(r.run_id for r in list_runs(tmp_path)) == [c.run_id for c in record.cells]
    path.unlink()
    assert main(["sweep", "--collect", str(record.path)]) == 0
    assert len(path.read_text().splitlines()) == 5
    assert main(["sweep", "--variant", "bogus=1", "--job-dir", str(tmp_path)]) == 2


def test_sweep_inline_keeps_a_failed_cell_and_goes_on(tmp_path: Path) -> None:
    code = main(["sweep", "--model", str(tmp_path / "missing.pt"), "bundled:digits-fp",
                 "--time", "4", "--eval_size", "90", "--job-dir", str(tmp_path)])
    assert code == 1
    (path,) = tmp_path.glob("sweep-*.csv")
    with open(path) as f:
        assert [r["status"] for r in csv.DictReader(f)] == ["failed", "finished"]
