"""SNN calibration after conversion (Li et al., ICML 2021, the "light" pipeline, no retraining).

At small T a converted layer fires, on average, a little less (flooring) or more than its ANN
counterpart, and the error grows layer after layer. Layer by layer, in order, on a few hundred
training images, we measure each channel's mean error in spikes per step,

    e_c = mean over images and positions of ( clamp(a / lambda_c, 0, 1) - spikes / T ),

(a: the ANN's ReLU output, lambda_c: the percentile its threshold was set from) and correct it:
- `bias`: the layer's bias grows by theta_c * e_c, the current that makes up e_c spikes per step
  (Li et al.'s bias calibration, their light pipeline);
- `potential`: the initial potential grows by T * theta_c * e_c, the same charge given at once
  (a closed form of their potential calibration, which they fit by SGD).
Each layer is corrected with the layers before it already corrected, as in the paper, so one
simulation of these training images per spiking layer. The correction is tuned to this T.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace

import torch

from bsnn.conversion.chain import Group, chain_forward
from bsnn.errors import ConfigError
from bsnn.options import SNN_CALIBRATIONS
from bsnn.snn.engine import Engine
from bsnn.snn.network import SpikingNetwork
from bsnn.snn.options import SimOptions


def _channel_mean(t: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) -> (C,) mean over images and positions."""
    return t.transpose(0, 1).flatten(1).mean(1)


def _shaped(per_channel: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A (C,) vector shaped to broadcast over one image's (C, H, W) or (C,) neurons."""
    return per_channel.view(-1, *([1] * (len(shape) - 1)))


def correct_errors(net: SpikingNetwork, ann: list[Group],
                   batches: Callable[[], Iterable[torch.Tensor]], options: SimOptions,
                   mode: str) -> list[float]:
    """SNN-calibrate `net` in place (`mode`: one of SNN_CALIBRATIONS); return, per spiking layer,
    the mean |error| (spikes per step) measured before its correction."""
    if mode not in SNN_CALIBRATIONS:
        raise ConfigError(f"SNN calibration {mode!r} is not known",
                          f"use one of: {', '.join(SNN_CALIBRATIONS)}")
    if mode == "none":
        return []
    engine = Engine(net, replace(options, readout_delay=0))
    errors = []
    for i, layer in enumerate(net.spiking):
        error_sum = torch.zeros(layer.shape[0], dtype=torch.float64,
                                device=layer.threshold.device)
        count = 0
        for x in batches():
            with torch.no_grad():
                _, acts = chain_forward(ann, x, keep=True)
            labels = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
            totals = engine.run_batch(x, labels, keep_totals=True).totals
            lam = _shaped(layer.lam.reshape(-1), layer.shape) if layer.lam.numel() > 1 \
                else layer.lam
            target = (acts[i] / lam).clamp(0, 1)
            rate = totals[i] / options.time
            error_sum += _channel_mean(target - rate).double() * x.shape[0]
            count += x.shape[0]
        error = (error_sum / count).to(layer.threshold.dtype)
        errors.append(float(error.abs().mean()))
        shift = _shaped(error, layer.shape) * layer.threshold
        if mode == "bias":
            layer.bias = shift if layer.bias is None else layer.bias + shift
        else:
            charge = options.time * shift
            layer.v_init = charge if layer.v_init is None else layer.v_init + charge
    return errors
