"""ANN -> SNN: cut the chain, set thresholds from activation percentiles, build layers.

Weights are kept as they are and the scale goes into thresholds and biases (the paper's threshold
balancing): theta_l = lambda_l / lambda_(l-1) and bias_l / lambda_(l-1), lambda_l the chosen
percentile of layer l's ReLU output, the same network as weight normalisation, so binary weights
stay exactly +-alpha — or +-1 with alpha folded into a per-channel threshold
(`binary_weights="sign"`).
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import nn

from bsnn.conversion.chain import POOLS, WEIGHTED, Drop, Group, chain_forward, extract_chain
from bsnn.conversion.percentile import StreamingPercentile, check_percentile
from bsnn.conversion.synapses import synapse_fan_out
from bsnn.errors import ConfigError, ConversionError
from bsnn.options import BINARY_WEIGHTS, GRANULARITIES
from bsnn.snn.network import SpikingLayer, SpikingNetwork

Batches = Callable[[], Iterable[torch.Tensor]]
PassProgress = Callable[[int, int, int], None]  # (passes so far, exact layers, layers)


@dataclass
class Conversion:
    """The spiking network, the ANN chain it came from, and what the user should know."""

    network: SpikingNetwork
    ann: list[Group]
    warnings: list[str] = field(default_factory=list)


def check_chain(model: nn.Module, groups: list[Group], x: torch.Tensor) -> None:
    """The chain must compute what the model computes: catches custom forwards (skips, ...)."""
    with torch.no_grad():
        want = model(x)
        got, _ = chain_forward(groups, x)
    if want.shape != got.shape or not torch.allclose(want, got, rtol=1e-4, atol=1e-5):
        raise ConversionError(
            f"{type(model).__name__}'s forward differs from its chain of modules",
            "convert a plain chain (no skip connections or functional ops in forward)",
        )


def seeded_dropout(seed: int) -> Callable[[], Drop]:
    """A maker of dropout functions whose masks are drawn from a generator seeded with `seed`
    at each call of the maker: every pass over the same batches drops the same activations, so
    a percentile computed over several passes stays exact."""
    def make() -> Drop:
        generators: dict[torch.device, torch.Generator] = {}

        def drop(x: torch.Tensor, p: float) -> torch.Tensor:
            if x.device not in generators:
                generators[x.device] = torch.Generator(x.device).manual_seed(seed)
            keep = torch.rand(x.shape, generator=generators[x.device], device=x.device) >= p
            return x * keep / (1 - p)
        return drop
    return make


def threshold_percentiles(
    groups: list[Group], batches: Batches, percentile: float, per_channel: bool,
    progress: PassProgress | None = None, dropout: Callable[[], Drop] | None = None,
) -> tuple[list[torch.Tensor], list[torch.Tensor], float]:
    """lambda per ReLU group (exact percentile over all images `batches` yields, eval mode), the
    max activation per group, and max |input|: what the thresholds are set from. `progress`
    hears after each pass how many groups are exact (a pass over many images can take
    minutes). `dropout`: the model's dropouts active, the same masks each pass (the original's
    calibration, which leaves the model in training mode)."""
    relu_groups = [g for g in groups if g.relu]
    estimators = [StreamingPercentile(percentile, per_channel) for _ in relu_groups]
    input_max = 0.0
    first = True
    passes = 0
    with torch.no_grad():
        while not all(e.done for e in estimators):
            drop = dropout() if dropout is not None else None
            for x in batches():
                if first and len(x):
                    input_max = max(input_max, float(x.abs().max()))
                _, acts = chain_forward(groups, x, keep=True, drop=drop)
                for est, a in zip(estimators, acts, strict=True):
                    if not est.done:
                        est.update(a)
            first = False
            passes += 1
            for est in estimators:
                if not est.done:
                    est.end_pass()
            if progress is not None:
                progress(passes, sum(e.done for e in estimators), len(estimators))
    return [e.result for e in estimators], [e.max for e in estimators], input_max


def _names(groups: list[Group]) -> list[str]:
    """conv<block>_<i> (a block ends at a pooling), fc<k>, pool<k>: names a paper uses."""
    names, block, index, fc, pool = [], 1, 0, 0, 0
    for g in groups:
        weighted = g.weighted
        is_conv = bool(weighted) and isinstance(weighted[0], nn.Conv2d)
        first = g.ops.index(weighted[0]) if weighted else len(g.ops)
        if is_conv and index and any(isinstance(op, POOLS) for op in g.ops[:first]):
            block, index = block + 1, 0  # pooled after the previous ReLU: a new block
        if is_conv:
            index += 1
            names.append(f"conv{block}_{index}")
        elif weighted:
            fc += 1
            names.append(f"fc{fc}")
        else:
            pool += 1
            names.append(f"pool{pool}")
        if is_conv and any(isinstance(op, POOLS) for op in g.ops[first:]):
            block, index = block + 1, 0
    return names


def _per_channel(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """Shape a (C,) tensor to broadcast over one image's (C, H, W) or (C,) neurons."""
    return t.view(-1, *([1] * (ndim - 1))) if t.numel() > 1 else t.reshape(())


def check_options(percentile: float, granularity: str, binary_weights: str) -> None:
    """Refuse what `convert` cannot do before any work: a typo must not mean another mode."""
    check_percentile(percentile)
    for name, value, allowed in (("granularity", granularity, GRANULARITIES),
                                 ("binary_weights", binary_weights, BINARY_WEIGHTS)):
        if value not in allowed:
            raise ConfigError(f"{name} {value!r} is not known",
                              f"use one of: {', '.join(allowed)}")


def _first_batch(batches: Batches) -> torch.Tensor:
    """The first batch (it traces the shapes and checks the chain), which must hold images."""
    sample = next(iter(batches()), None)
    if sample is None or len(sample) == 0:
        raise ConfigError("there are no images to set the thresholds from",
                          "pass at least one training image (e.g. --norm 128)")
    return sample


def convert(
    model: nn.Module,
    batches: Batches,
    percentile: float = 99.7,
    granularity: str = "layer",
    binary_weights: str = "sign",
    progress: PassProgress | None = None,
    dropout_seed: int | None = None,
) -> Conversion:
    """Convert `model` (eval mode), its thresholds set from the images that `batches()` yields.

    `batches` is called once per percentile pass (about three) and must yield the same images
    each time, on the model's device. `progress(pass, exact, layers)` is called after each
    pass. `dropout_seed`: calibrate with the model's dropouts active, as the original does
    (`--protocol original`), their masks drawn from that seed.
    """
    check_options(percentile, granularity, binary_weights)
    model.eval()
    groups = extract_chain(model)
    sample = _first_batch(batches)
    check_chain(model, groups, sample[:8])
    dropout = None if dropout_seed is None else seeded_dropout(dropout_seed)
    lambdas, maxima, input_max = threshold_percentiles(groups, batches, percentile,
                                                       granularity == "channel", progress,
                                                       dropout)
    with torch.no_grad():
        _, acts = chain_forward(groups, sample[:1], keep=True)
        out_shape = tuple(chain_forward(groups, sample[:1])[0].shape[1:])
    shapes = [tuple(a.shape[1:]) for a in acts] + [out_shape]

    warnings: list[str] = []
    layers: list[SpikingLayer] = []
    prev_ref = torch.tensor(1.0, device=sample.device)  # lambda_0 = 1 for the analog input
    per_relu = iter(zip(lambdas, maxima, strict=True))
    for g, name, shape in zip(groups, _names(groups), shapes, strict=True):
        lam = _lambda(*next(per_relu), name, percentile, warnings) if g.relu else None
        layers.append(_layer(g, name, shape, lam, prev_ref, binary_weights))
        if lam is not None:
            prev_ref = lam.max()
    for layer, nxt in itertools.pairwise(layers):
        layer.fan_out = synapse_fan_out(nxt.ops, layer.shape)
    net = SpikingNetwork(layers, tuple(sample.shape[1:]), percentile, granularity,
                         input_scale=input_max or 1.0)
    return Conversion(net, groups, warnings)


def _lambda(lam: torch.Tensor, maximum: torch.Tensor, name: str, percentile: float,
            warnings: list[str]) -> torch.Tensor:
    """The group's percentile, with its max where the percentile is 0 (a nearly silent group
    would otherwise get a zero threshold and fire every step)."""
    lam = lam.clone()
    dead = lam <= 0
    if bool(dead.any()):
        lam = torch.where(dead, maximum.clamp(min=1e-6), lam)
        warnings.append(f"{name}: the {percentile}th percentile of {int(dead.sum())} "
                        f"group(s) is 0 (nearly always silent); used their max instead")
    return lam


def _layer(g: Group, name: str, shape: tuple[int, ...], lam: torch.Tensor | None,
           prev_ref: torch.Tensor, binary_weights: str) -> SpikingLayer:
    """One spiking layer: threshold lambda_l / lambda_(l-1), bias / lambda_(l-1).

    In sign mode a binary layer's alpha moves into its thresholds; the output layer has none (it
    does not spike: its summed current is read), so it keeps +-alpha, and its ranking of the
    classes is the alpha mode's (dividing each class's current by its own alpha would change it).
    """
    ndim = len(shape)
    bias = None if g.bias is None else g.bias / prev_ref
    ops = nn.Sequential(*g.ops)
    threshold = amplitude = None
    if lam is not None:
        threshold = _per_channel(lam / prev_ref, ndim)
        if lam.numel() > 1:
            amplitude = _per_channel(lam / lam.max(), ndim)
    if g.binary and binary_weights == "sign" and lam is not None:
        ops = copy.deepcopy(ops)  # the ANN chain keeps its +-alpha weights
        threshold, bias = _fold_alpha(ops, name, threshold, bias, ndim)
    if bias is not None:
        bias = _per_channel(bias, ndim)
    return SpikingLayer(
        name=name, kind=_kind(g), ops=ops, bias=bias, threshold=threshold,
        lam=None if lam is None else lam.reshape(-1) if lam.numel() > 1 else lam.reshape(()),
        shape=shape, binary=g.binary, spike_amplitude=amplitude, sources=g.sources,
        delay=g.hops,
    )


def _kind(g: Group) -> str:
    weighted = g.weighted
    if not weighted:
        return "pool"
    return "conv" if isinstance(weighted[0], nn.Conv2d) else "linear"


def _fold_alpha(ops: nn.Sequential, name: str, threshold: torch.Tensor | None,
                bias: torch.Tensor | None, ndim: int) -> tuple[torch.Tensor | None,
                                                            torch.Tensor | None]:
    """Weights +-alpha -> +-1; alpha moves into a per-channel threshold and bias."""
    op = [m for m in ops if isinstance(m, WEIGHTED)][-1]
    w = op.weight.data
    magnitude = w.abs().flatten(1)
    alpha = magnitude[:, 0].clone()  # exact: every weight of a channel is +-alpha
    if not torch.equal(magnitude, alpha[:, None].expand_as(magnitude)) or not (alpha > 0).all():
        raise ConversionError(f"{name}: weights are not +-alpha per output channel",
                              "use --binary-weights alpha for this model")
    w.copy_(torch.where(w >= 0, 1.0, -1.0))
    alpha_n = _per_channel(alpha, ndim) if alpha.numel() > 1 else alpha.reshape(())
    new_threshold = None if threshold is None else threshold / alpha_n
    new_bias = None if bias is None else bias / alpha
    return new_threshold, new_bias
