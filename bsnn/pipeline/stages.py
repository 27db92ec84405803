"""The stages of a run between loading and simulating: threshold calibration and the SNN
calibration, each one function that every face uses (the runner, `bsnn.convert`, the NIR
export), so there is one implementation of each.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from bsnn.conversion import Conversion, convert
from bsnn.conversion.synapses import layer_macs
from bsnn.events import Event, RunWarning, SnnCalibration, Thresholds
from bsnn.options import sim_options_kwargs
from bsnn.snn.options import SimOptions

Batches = Callable[[], Iterable[torch.Tensor]]
ProgressFn = Callable[[int, int, int], None]


def sim_options(config: Any, **override: Any) -> SimOptions:
    """The engine's options from a RunConfig (the table's options marked `engine`)."""
    return SimOptions(**(sim_options_kwargs(config) | override))


def calibrate_thresholds(model: nn.Module, batches: Batches, config: Any,
                         progress: ProgressFn | None = None) -> Conversion:
    """The paper's threshold balancing: a percentile of each layer's ANN activations over the
    calibration images sets its threshold (bsnn.conversion.convert); under the original's
    protocol with the model's dropouts active, as its calibration leaves the model training."""
    original = config.protocol == "original"
    return convert(model, batches, config.percentile, config.threshold_granularity,
                   config.binary_weights, progress=progress,
                   dropout_seed=config.seed if original else None)


def conversion_events(conversion: Conversion, percentile: float,
                      granularity: str) -> list[Event]:
    """What a conversion tells a run's consumers: its warnings, then its thresholds."""
    warnings: list[Event] = [RunWarning(message=m) for m in conversion.warnings]
    net = conversion.network
    layers = [{**row, "macs": macs} for row, macs in zip(net.describe(), layer_macs(net),
                                                            strict=True)]
    return [*warnings, Thresholds(layers=layers, percentile=percentile,
                                  granularity=granularity)]


def snn_calibrated(conversion: Conversion, batches: Batches, images: int,
                   options: SimOptions, mode: str) -> tuple[Conversion, SnnCalibration]:
    """Li et al.'s SNN calibration (bsnn.conversion.correction) on a copy of the network's
    layers (it sets their biases or initial potentials), so the converted network stays as it
    was; the calibrated conversion and its `snn_calibration` event. `options` are the run's,
    with no readout delay: the calibration compares every step."""
    from bsnn.conversion.correction import correct_errors

    network = dataclasses.replace(conversion.network,
                                  layers=[copy.copy(layer) for layer in conversion.network.layers])
    errors = correct_errors(network, conversion.ann, batches,
                            dataclasses.replace(options, readout_delay=0), mode)
    names = [layer.name for layer in network.spiking]
    event = SnnCalibration(mode=mode, images=images,
                           error_before=dict(zip(names, errors, strict=True)))
    return dataclasses.replace(conversion, network=network), event
