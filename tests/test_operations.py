"""Operations, energy and ANN-vs-SNN agreement in a real run's summary and exports."""

import itertools
from pathlib import Path

import pytest

import bsnn
from bsnn.conversion.synapses import input_fan_out, layer_macs
from bsnn.errors import ConfigError
from bsnn.runlog import read_events
from bsnn.summary import summarize


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, object]:
    snn = bsnn.convert(bsnn.load_model("bundled:digits-binary"), "digits", norm=64,
                       device="cpu")
    job = tmp_path_factory.mktemp("job")
    result = bsnn.simulate(snn, "digits", time=32, eval_size=100, device="cpu", job_dir=job,
                           energy_mac_pj=5.0)
    return result, next(p for p in job.iterdir() if (p / "summary.json").exists()), snn


def test_macs_are_the_synapses_into_each_layer(digits_run) -> None:
    result, _, snn = digits_run
    net = snn.conversion.network
    macs = layer_macs(net)
    assert macs[0] == float(input_fan_out(net).sum())
    for layer, into in zip(net.layers[:-1], macs[1:], strict=True):
        assert into == float(layer.fan_out.sum())
    assert [r["ann_macs_per_image"] for r in result["layers"]] == macs
    first = net.layers[0].ops[0]  # 3x3 conv on 8x8 with padding 1: border pixels lose taps
    assert macs[0] < first.weight.numel() * 8 * 8


def test_energy_uses_the_given_costs_and_the_layer_before(digits_run) -> None:
    result, _, _ = digits_run
    layers, energy = result["layers"], result["energy"]
    assert energy["costs_pj"] == {"mac": 5.0, "ac": 0.9, "binary": 0.9}
    assert layers[0]["snn_ops_per_image"] == layers[0]["ann_macs_per_image"]  # analog input
    for before, layer in itertools.pairwise(layers):
        assert layer["snn_ops_per_image"] == pytest.approx(before["synops_per_image"])
        cost = 0.9 if layer["binary"] else 5.0
        assert layer["ann_energy_pj"] == pytest.approx(layer["ann_macs_per_image"] * cost)
    assert energy["snn_energy_pj"] == pytest.approx(sum(x["snn_energy_pj"] for x in layers))
    assert energy["energy_ratio"] == pytest.approx(energy["ann_energy_pj"]
                                                   / energy["snn_energy_pj"])


def test_converted_layers_follow_their_ann(digits_run) -> None:
    result, _, _ = digits_run
    spiking = result["layers"][:-1]
    assert all(x["correlation"] > 0.9 for x in spiking)
    assert all(0 < x["clipped_share"] < 0.05 for x in spiking)  # p99.7 clips a little
    assert result["layers"][-1]["correlation"] is None  # the readout does not spike


def test_exports_carry_the_figures(digits_run) -> None:
    result, run_dir, _ = digits_run
    assert (run_dir / "agreement.png").stat().st_size > 10_000
    md = (run_dir / "summary.md").read_text()
    assert "| total |" in md and "ANN / SNN energy" in md
    header = (run_dir / "layers.csv").read_text().splitlines()[0].split(",")
    assert {"ann_macs_per_image", "snn_energy_pj", "correlation"} <= set(header)
    again = summarize(read_events(run_dir / "events.jsonl"))
    assert again["energy"] == result["energy"]


def test_poisson_input_counts_expected_input_spikes() -> None:
    snn = bsnn.convert(bsnn.load_model("bundled:digits-fp"), "digits", norm=64, device="cpu")
    result = bsnn.simulate(snn, "digits", time=16, eval_size=50, device="cpu",
                           encoding="poisson")
    first = result["layers"][0]
    assert 0 < first["snn_ops_per_image"] < 16 * first["ann_macs_per_image"]
    assert first["snn_energy_pj"] == pytest.approx(first["snn_ops_per_image"] * 0.9)


def test_a_cost_must_be_positive() -> None:
    snn = bsnn.convert(bsnn.load_model("bundled:digits-fp"), "digits", norm=64, device="cpu")
    with pytest.raises(ConfigError, match="energy_ac_pj"):
        bsnn.simulate(snn, "digits", time=4, eval_size=10, device="cpu", energy_ac_pj=0)
