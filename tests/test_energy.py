"""Operations and energy per layer: the stated costs, the first layer's input, no partial sums."""

import pytest

from bsnn.energy import OpCosts, layer_energy, totals


def test_costs_per_operation() -> None:
    costs = OpCosts.from_config({})
    fp = layer_energy({"macs": 1000, "binary": False}, 250.0, False, "constant", costs)
    assert fp["ann_energy_pj"] == pytest.approx(4600) and fp["snn_energy_pj"] == pytest.approx(225)
    binary = layer_energy({"macs": 1000, "binary": True}, 250.0, False, "constant", costs)
    assert binary["ann_energy_pj"] == pytest.approx(900)
    custom = layer_energy({"macs": 10, "binary": False}, 4.0, False, "constant",
                          OpCosts.from_config({"energy_mac_pj": 3.0, "energy_ac_pj": 0.1}))
    assert custom["ann_energy_pj"] == pytest.approx(30) and custom["snn_energy_pj"] == 0.4


def test_the_first_layer_computes_the_analog_current_once_or_counts_input_spikes() -> None:
    row = {"macs": 500, "binary": False}
    constant = layer_energy(row, None, True, "constant", OpCosts.from_config({}))
    assert constant["snn_ops_per_image"] == 500 and constant["snn_energy_pj"] == 500 * 4.6
    poisson = layer_energy(row, 120.0, True, "poisson", OpCosts.from_config({}))
    assert poisson["snn_ops_per_image"] == 120 and poisson["snn_energy_pj"] == 120 * 0.9


def test_totals_refuse_a_partial_sum() -> None:
    costs = OpCosts.from_config({})
    a = layer_energy({"macs": 10, "binary": False}, 5.0, False, "constant", costs)
    b = layer_energy({"macs": 20, "binary": False}, None, False, "constant", costs)
    assert totals([a])["energy_ratio"] == pytest.approx(46 / 4.5)
    both = totals([a, b])
    assert both["snn_energy_pj"] is None and both["energy_ratio"] is None
    assert both["ann_macs_per_image"] == 30
