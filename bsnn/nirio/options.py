"""The NIR export's torch-free constants: the poolings, the options that shape an exported
network, those NIR cannot carry (and the check that refuses them). The CLI builds its parser from
these without loading torch, numpy or nir."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bsnn.errors import ConfigError
from bsnn.options import EXPORT_OPTIONS, NETWORK_OPTIONS

__all__ = ["CARRIED", "EXPORT_DEFAULTS", "EXPORT_OPTIONS", "FORMAT", "NETWORK_OPTIONS", "POOLINGS",
           "check_carried"]

FORMAT = 1  # of the "bsnn" entry in the graph's metadata
POOLINGS = ("sum", "avg")  # sum: SumPool2d, 1/k^2 folded into the next neurons; avg: AvgPool2d
# Simulation options a NIR graph cannot carry: the one value it can, and why.
CARRIED = {
    "reset": ("subtract", "NIR's IF neurons are written with bsnn's reset by subtraction"),
    "propagation": ("same-step", "a NIR graph has no per-layer delays: its simulators pass a "
                    "spike through every layer in the step it is made"),
    "encoding": ("constant", "a NIR graph is the network, not its input: the analog image is "
                 "its input at every step"),
    "readout_delay": (0, "NIR's output node has no readout delay"),
}
# An export's defaults for those: the values NIR carries (a run's default propagation, the
# original's delayed timing, has no NIR form; same-step is what NIR simulators do).
EXPORT_DEFAULTS = {name: value for name, (value, _) in CARRIED.items()}


def check_carried(values: Mapping[str, Any]) -> None:
    """ConfigError for a simulation option NIR cannot carry, naming the value it can."""
    for name, (value, why) in CARRIED.items():
        if name in values and values[name] != value:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{name} {values[name]!r} cannot be exported to NIR: {why}",
                              f"export with {flag} {value} (the default), or simulate this "
                              "option in bsnn")
