"""Operations and an energy estimate: the ANN's multiply-accumulates against the SNN's
accumulates (synaptic operations), per layer and per image.

An operation is one synapse used once: a MAC in the ANN (an add of +-x in a binary layer), an
accumulate in the SNN each time a spike crosses it. The SNN's first layer sees the analog image:
with constant-current input bsnn computes its current once per image (MACs, as in the ANN);
with Poisson input every input spike is an accumulate. Neuron updates (leak-free integrate,
compare, reset) are not counted, as in the estimates this follows. Costs per operation default
to the 45 nm figures of Horowitz (ISSCC 2014): 32-bit float multiply 3.7 pJ + add 0.9 pJ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bsnn.options import OPTION


@dataclass(frozen=True)
class OpCosts:
    """Picojoules per operation: the run options energy_mac_pj, energy_ac_pj and
    energy_binary_pj (bsnn.options, where the defaults are)."""

    mac_pj: float
    ac_pj: float
    binary_pj: float

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> OpCosts:
        """A run's costs; a run recorded before they were options gets the defaults."""
        def get(name: str) -> float:
            value = config.get(name)
            return float(OPTION[name].default if value is None else value)

        return cls(get("energy_mac_pj"), get("energy_ac_pj"), get("energy_binary_pj"))


def layer_energy(layer: dict[str, Any], snn_ops: float | None, first: bool, encoding: str,
                 costs: OpCosts) -> dict[str, Any]:
    """One layer's figures per image: `layer` is its summary row (with `macs`, the synapses into
    it, and `binary`), `snn_ops` the accumulates into it (the spikes of the layer before, times
    their fan-out; for the first layer under Poisson input, the input spikes')."""
    macs = layer.get("macs")
    if macs is None:
        return {"ann_macs_per_image": None, "snn_ops_per_image": None,
                "ann_energy_pj": None, "snn_energy_pj": None}
    ann_pj = macs * (costs.binary_pj if layer.get("binary") else costs.mac_pj)
    if first and encoding == "constant":  # the image's current, computed once per image
        snn, snn_pj = float(macs), macs * costs.mac_pj
    else:
        snn = snn_ops
        snn_pj = None if snn_ops is None else snn_ops * costs.ac_pj
    return {"ann_macs_per_image": float(macs), "snn_ops_per_image": snn,
            "ann_energy_pj": ann_pj, "snn_energy_pj": snn_pj}


def totals(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Sums over the layers; None if any layer lacks a figure (never a silent partial sum)."""
    def total(key: str) -> float | None:
        values = [r.get(key) for r in rows]
        return None if not values or any(v is None for v in values) else float(sum(values))

    out = {key: total(key) for key in ("ann_macs_per_image", "snn_ops_per_image",
                                       "ann_energy_pj", "snn_energy_pj")}
    ann, snn = out["ann_energy_pj"], out["snn_energy_pj"]
    out["energy_ratio"] = ann / snn if ann is not None and snn else None
    return out


def operations(rows: list[dict[str, Any]], input_ops: float | None, encoding: str,
               costs: OpCosts) -> dict[str, Any]:
    """Add each layer's operations and energy to its summary row (in network order: the SNN's
    accumulates into a layer are the synaptic operations of the layer before); return the
    totals with the costs used. `input_ops`: Poisson input's accumulates per image."""
    into = [input_ops, *(r.get("synops_per_image") for r in rows)][:len(rows)]
    for i, (row, ops) in enumerate(zip(rows, into, strict=True)):
        row.update(layer_energy(row, ops, i == 0, encoding, costs))
    return {**totals(rows), "costs_pj": {"mac": costs.mac_pj, "ac": costs.ac_pj,
                                         "binary": costs.binary_pj}}
