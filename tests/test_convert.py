"""ANN -> SNN conversion: the chain, BN folding, refusals, thresholds, binary weights, fan-out,
and (with the bundled trained models) fidelity of the SNN to the ANN it came from."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bsnn
from bsnn.conversion import chain_forward, convert, extract_chain
from bsnn.conversion.convert import GRANULARITIES
from bsnn.conversion.correction import SNN_CALIBRATIONS, correct_errors
from bsnn.errors import ConfigError, ConversionError
from bsnn.models import BinaryConv2d, BinaryLinear, build_model
from bsnn.models.binary import weight_alpha, weight_signs
from bsnn.snn.engine import Engine
from bsnn.snn.network import SpikingNetwork
from bsnn.snn.options import SimOptions

Batches = Callable[[torch.Tensor, int], Callable[[], list[torch.Tensor]]]
WEIGHTED = (nn.Conv2d, nn.Linear)

pytestmark = pytest.mark.usefixtures("one_thread")


def _weighted(ops: nn.Module) -> nn.Module:
    (op,) = [m for m in ops if isinstance(m, WEIGHTED)]
    return op


def _relu_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every nn.ReLU's output in the model's own eval-mode forward."""
    model.eval()
    outs: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda m, i, o: outs.append(o.detach()))
               for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return outs


def _np_percentile(a: torch.Tensor, q: float, per_channel: bool = False) -> torch.Tensor:
    """numpy's linear-interpolation percentile (in float64), as float32."""
    v = a.double().numpy()
    if per_channel:
        v = np.moveaxis(v, 1, 0).reshape(v.shape[1], -1)
        return torch.from_numpy(np.percentile(v, q, axis=1, method="linear")).float()
    return torch.tensor(np.percentile(v.reshape(-1), q, method="linear")).float()


def _randomise_bn(model: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.3 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.2 + torch.rand(c, generator=gen))
                if m.affine:
                    m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                    m.bias.copy_(0.2 * torch.randn(c, generator=gen))


# --------------------------------------------------------------------------------------------
# the chain


@pytest.mark.parametrize("binary", [False, True], ids=["fp", "binary"])
def test_chain_equals_forward_vgg15ab(binary: bool) -> None:
    torch.manual_seed(0)
    model = build_model("vgg15ab", 100, (3, 32, 32), binary=binary).eval()
    x = torch.randn(2, 3, 32, 32)
    groups = extract_chain(model)
    assert [g.relu for g in groups] == [True] * 14 + [False]
    assert sum(g.binary for g in groups) == (13 if binary else 0)  # all but the first and last
    with torch.no_grad():
        want = model(x)
        got, acts = chain_forward(groups, x, keep=True)
        relus = _relu_outputs(model, x)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))
    assert len(acts) == len(relus) == 14
    for a, r in zip(acts, relus, strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6 * float(r.abs().max()))


@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_folding(affine: bool) -> None:
    gen = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    model = nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5, affine=affine), nn.ReLU(),
        nn.Conv2d(5, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
        nn.Linear(4 * 4 * 4, 6, bias=False), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 3),
    )
    _randomise_bn(model, gen)
    model.eval()
    x = torch.randn(4, 3, 6, 6, generator=gen)
    groups = extract_chain(model)
    assert len(groups) == 4
    assert not any(isinstance(op, nn.BatchNorm1d | nn.BatchNorm2d) for g in groups for op in g.ops)
    with torch.no_grad():
        want = model(x)
        got, acts = chain_forward(groups, x, keep=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, r in zip(acts, _relu_outputs(model, x), strict=True):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5)


def test_batchnorm_without_a_layer_to_fold_into() -> None:
    model = nn.Sequential(nn.BatchNorm2d(1), nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2, 2))
    with pytest.raises(ConversionError, match=r"0 \(BatchNorm"):
        extract_chain(model)


# --------------------------------------------------------------------------------------------
# refusals: the module's path and class


class _Features(nn.Module):
    def __init__(self, features: nn.Sequential, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class _MyActivation(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0) ** 2


class _SkipNet(_Features):
    """features/classifier like a VGG, but the forward adds a skip connection."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier((self.features(x) + x).flatten(1))


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


def _refused(model: nn.Module, shape: tuple[int, ...] = (2, 4, 4)) -> ConversionError:
    x = torch.rand(4, *shape)
    with pytest.raises(ConversionError) as info:
        convert(model, lambda: [x])
    assert info.value.fix, "a ConversionError says how to fix it"
    return info.value


def test_maxpool_is_refused_with_its_path() -> None:
    model = _Features(
        nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)),
        nn.Sequential(nn.Linear(16, 3)))
    err = _refused(model)
    assert "features.2" in err.message and "MaxPool2d" in err.message
    assert "AvgPool2d" in err.fix


@pytest.mark.parametrize(("modules", "path", "says"), [
    ([nn.MaxPool2d(2), nn.Conv2d(2, 4, 3, padding=1), nn.ReLU()], "0", "max-pool of spikes"),
    ([nn.Conv2d(2, 4, 3, padding=1), nn.MaxPool2d(2), nn.BatchNorm2d(4), nn.ReLU()], "2",
     "follows a MaxPool2d"),
    ([nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.Conv2d(4, 4, 1),
      nn.ReLU()], "2", "after a MaxPool2d"),
    ([nn.Conv2d(2, 4, 3, padding=1), nn.AvgPool2d(1), nn.MaxPool2d(2), nn.ReLU()], "2",
     "max-pool of spikes"),
], ids=["at-the-start", "batchnorm-after", "conv-after", "not-right-after-a-conv"])
def test_maxpool_converts_only_right_after_a_conv(modules: list[nn.Module], path: str,
                                                  says: str) -> None:
    """The max of a conv's currents is what the original converts (before the ReLU); a max-pool
    anywhere else would need another conversion, and BN after it does not fold through it."""
    err = _refused(nn.Sequential(*modules, nn.Flatten(), nn.Linear(16, 3)))
    assert f"{path} (" in err.message or err.message.startswith(f"{path}:"), err.message
    assert says in err.message, err.message


@pytest.mark.parametrize("act", [nn.GELU(), nn.Sigmoid(), _MyActivation()],
                         ids=["GELU", "Sigmoid", "custom"])
def test_unsupported_module_is_refused_with_its_path(act: nn.Module) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(32, 8), act, nn.Linear(8, 3))
    err = _refused(model)
    assert f"unsupported layer 2 ({type(act).__name__})" in err.message, err.message


def test_unknown_container_is_refused_with_its_path() -> None:
    model = nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU(), _Block(), nn.ReLU(),
                          nn.Flatten(), nn.Linear(32, 3))
    err = _refused(model)
    assert "cannot walk 2 (_Block)" in err.message, err.message


def test_skip_connection_is_caught_by_the_chain_check() -> None:
    model = _SkipNet(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.ReLU()),
                     nn.Sequential(nn.Linear(32, 3)))
    extract_chain(model)  # the modules alone look like a chain
    err = _refused(model)
    assert "_SkipNet" in err.message


# --------------------------------------------------------------------------------------------
# options: refused before any work, naming the choices


class _NoForward(nn.Sequential):
    """A model whose forward must not run: the options are checked before it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise AssertionError("convert ran the model before checking its options")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"percentile": 0}, "outside"), ({"percentile": -1.0}, "outside"),
    ({"percentile": 100.5}, "outside"), ({"percentile": 150}, "outside"),
    ({"percentile": float("nan")}, "outside"), ({"percentile": "99.7"}, "not a number"),
    ({"percentile": True}, "not a number"),
    ({"granularity": "channels"}, "granularity 'channels'"),
    ({"granularity": "Layer"}, "granularity 'Layer'"),
    ({"binary_weights": "signed"}, "binary_weights 'signed'"),
], ids=lambda v: repr(v) if not isinstance(v, str) else v)
def test_bad_option_is_a_config_error(kwargs: dict[str, object], match: str) -> None:
    model = _NoForward(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ConfigError, match=match) as info:
        convert(model, lambda: [torch.rand(2, 1, 2, 2)], **kwargs)  # type: ignore[arg-type]
    assert info.value.fix


def test_choices_are_named_in_the_fix() -> None:
    model = _NoForward(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(ConfigError) as info:
        convert(model, lambda: [torch.rand(2, 1, 2, 2)], granularity="per-channel")
    assert info.value.fix == f"use one of: {', '.join(GRANULARITIES)}"


@pytest.mark.parametrize("percentile", [100, 100.0, 1e-9, 50])
def test_percentile_edges_are_accepted(percentile: float, batches_from: Batches) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.rand(10, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    conv = convert(model, batches_from(x, 5), percentile)
    assert conv.network.percentile == percentile


def test_no_images_is_a_config_error() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    for batches in (list, lambda: [torch.empty(0, 1, 2, 2)]):
        with pytest.raises(ConfigError, match="no images"):
            convert(model, batches)


@pytest.mark.parametrize("mode", ["Bias", "membrane", ""])
def test_unknown_snn_calibration_is_a_config_error(mode: str) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    x = torch.rand(4, 1, 2, 2)
    conversion = convert(model, lambda: [x])
    with pytest.raises(ConfigError, match=f"SNN calibration {mode!r}") as info:
        correct_errors(conversion.network, conversion.ann, lambda: [x], SimOptions(4), mode)
    assert info.value.fix == f"use one of: {', '.join(SNN_CALIBRATIONS)}"
    assert correct_errors(conversion.network, conversion.ann, lambda: [x], SimOptions(4),
                          "none") == []


# --------------------------------------------------------------------------------------------
# thresholds and biases


@pytest.fixture(scope="module")
def digits_like() -> torch.Tensor:
    return torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("binary", [False, True], ids=["fp", "binary"])
def test_layer_thresholds_are_percentile_ratios(binary: bool, digits_like: torch.Tensor,
                                                batches_from: Batches) -> None:
    torch.manual_seed(2)
    model = build_model("vgg6ab", 10, (1, 8, 8), binary=binary, dropout=0.5)
    model.train()  # convert must take its percentiles in eval mode, dropout off
    conv = convert(model, batches_from(digits_like, 17), 99.7, binary_weights="alpha")
    lams = [_np_percentile(a, 99.7) for a in _relu_outputs(model, digits_like)]
    spiking = conv.network.spiking
    assert len(spiking) == len(lams) == 5
    previous = torch.tensor(1.0)  # lambda_0 = 1: the analog input
    for layer, lam in zip(spiking, lams, strict=True):
        assert layer.lam.shape == () and layer.threshold.shape == ()
        assert torch.equal(layer.lam, lam), (layer.name, layer.lam, lam)
        assert torch.equal(layer.threshold, lam / previous), layer.name
        previous = lam
    # other batching, same images
    again = convert(model, batches_from(digits_like, 40), 99.7, binary_weights="alpha")
    for a, b in zip(conv.network.layers, again.network.layers, strict=True):
        assert (a.threshold is None and b.threshold is None) or torch.equal(a.threshold,
                                                                            b.threshold)


def _biased_chain() -> nn.Module:
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1),
        nn.AvgPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 4 * 4, 8), nn.ReLU(),
        nn.Linear(8, 3),
    )
    with torch.no_grad():
        for m in model:
            if isinstance(m, WEIGHTED):
                m.bias.normal_(0, 0.1)
    return model.eval()


def test_biases_scaled_by_previous_lambda(digits_like: torch.Tensor,
                                          batches_from: Batches) -> None:
    """The chain adds a biased layer's bias after its ops (the model fuses it), so its ReLU
    outputs, and lambda, may differ from the model's in the last bits: lambda is compared
    to numpy within 1e-6; thresholds and biases exactly, against the layer's own lambda."""
    model = _biased_chain()
    conv = convert(model, batches_from(digits_like, 16), 99.7)
    spiking = conv.network.spiking
    for layer, act in zip(spiking, _relu_outputs(model, digits_like), strict=True):
        torch.testing.assert_close(layer.lam, _np_percentile(act, 99.7), rtol=1e-6, atol=0)
    previous = [torch.tensor(1.0)] + [layer.lam for layer in spiking]
    biases = [m.bias.detach() for m in model if isinstance(m, WEIGHTED)]
    for layer, bias, prev in zip(conv.network.layers, biases, previous, strict=True):
        assert torch.equal(layer.bias.reshape(-1), bias / prev), layer.name
        # broadcasts over one image's neurons: (C, 1, 1) for conv layers
        assert layer.bias.dim() == len(layer.shape)
    for layer, prev in zip(spiking, previous[:-1], strict=True):
        assert torch.equal(layer.threshold, layer.lam / prev)


def test_channel_thresholds(digits_like: torch.Tensor, batches_from: Batches) -> None:
    model = _biased_chain()
    conv = convert(model, batches_from(digits_like, 16), 99.7, granularity="channel")
    spiking = conv.network.spiking
    for layer, a in zip(spiking, _relu_outputs(model, digits_like), strict=True):
        lam = _np_percentile(a, 99.7, per_channel=True)
        # a channel whose percentile is 0 (nearly silent) gets its max instead (1e-6 if it is
        # silent throughout), with a warning
        channel_max = a.transpose(0, 1).reshape(a.shape[1], -1).amax(1).clamp(min=1e-6)
        want = torch.where(lam > 0, lam, channel_max)
        torch.testing.assert_close(layer.lam, want, rtol=1e-6, atol=0)
        assert len(set(want.tolist())) > 2, "channels should differ"
    assert conv.warnings and "conv1_1" in conv.warnings[0], "this seed has a silent channel"
    biases = [m.bias.detach() for m in model if isinstance(m, WEIGHTED)]
    previous = torch.tensor(1.0)
    for layer, bias in zip(conv.network.layers, biases, strict=True):
        assert torch.equal(layer.bias.reshape(-1), bias / previous), layer.name
        if layer.is_output:
            break
        lam = layer.lam
        c = len(lam)
        want_shape = (c, 1, 1) if len(layer.shape) == 3 else (c,)
        assert tuple(layer.threshold.shape) == want_shape
        assert torch.equal(layer.threshold.reshape(-1), lam / previous), layer.name
        # a spike of channel c carries lam_c / max(lam) into the next layer
        assert torch.equal(layer.spike_amplitude.reshape(-1), lam / lam.max())
        previous = lam.max()


def test_silent_layer_uses_its_max_and_warns(batches_from: Batches) -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[1].weight.fill_(1.0)
        model[1].bias.copy_(torch.tensor([-3.98, -3.9, -3.5]))
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(100, 1, 2, 2, generator=gen) * 0.5 + 0.5  # sums in [2, 4]: rarely above 3.98
    x[0] = 1.0  # at least one positive value in every channel
    conv = convert(model, batches_from(x, 100), 50.0, granularity="channel")
    layer = conv.network.layers[0]
    acts = torch.relu(model[1](x.flatten(1))).detach()
    assert _np_percentile(acts, 50.0, per_channel=True).eq(0).all(), "every channel is silent"
    assert torch.equal(layer.lam, acts.amax(0))
    assert conv.warnings == [f"{layer.name}: the 50.0th percentile of 3 group(s) is 0 (nearly "
                             "always silent); used their max instead"]


# --------------------------------------------------------------------------------------------
# binary weights


@pytest.fixture(scope="module")
def binary_vgg6() -> nn.Module:
    torch.manual_seed(4)
    return build_model("vgg6ab", 10, (1, 8, 8), binary=True).eval()


def _binary_sources(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, BinaryConv2d | BinaryLinear)]


def test_binary_weights_alpha(binary_vgg6: nn.Module, digits_like: torch.Tensor,
                              batches_from: Batches) -> None:
    conv = convert(binary_vgg6, batches_from(digits_like, 20), 99.7, binary_weights="alpha")
    layers = [layer for layer in conv.network.layers if layer.binary]
    sources = _binary_sources(binary_vgg6)
    assert [layer.name for layer in layers] == ["conv1_2", "conv2_1", "conv2_2", "fc1"]
    for layer, src in zip(layers, sources, strict=True):
        w = _weighted(layer.ops).weight
        alpha = weight_alpha(src.weight).view(-1, *([1] * (w.dim() - 1)))
        assert torch.equal(w.abs(), alpha.expand_as(w)), layer.name
        assert torch.equal(weight_signs(w), weight_signs(src.weight)), layer.name
    assert not conv.network.layers[0].binary and not conv.network.output.binary


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_binary_weights_sign(binary_vgg6: nn.Module, digits_like: torch.Tensor,
                             batches_from: Batches, granularity: str) -> None:
    state = copy.deepcopy(binary_vgg6.state_dict())
    alpha_conv = convert(binary_vgg6, batches_from(digits_like, 20), 99.7, granularity, "alpha")
    sign_conv = convert(binary_vgg6, batches_from(digits_like, 20), 99.7, granularity)
    sources = iter(_binary_sources(binary_vgg6))
    for a, s in zip(alpha_conv.network.layers, sign_conv.network.layers, strict=True):
        assert a.name == s.name
        if not s.binary:
            assert torch.equal(_weighted(a.ops).weight, _weighted(s.ops).weight)
            assert (a.threshold is None and s.threshold is None) or torch.equal(a.threshold,
                                                                                s.threshold)
            continue
        src = next(sources)
        w = _weighted(s.ops).weight
        alpha = weight_alpha(src.weight)
        c = len(alpha)
        assert torch.equal(weight_signs(w), weight_signs(src.weight)), s.name
        want_shape = (c, 1, 1) if len(s.shape) == 3 else (c,)
        assert tuple(s.threshold.shape) == want_shape, s.name
        torch.testing.assert_close(s.threshold.reshape(-1),
                                   (a.threshold / a.threshold.new_ones(want_shape)).reshape(-1)
                                   / alpha, rtol=2e-7, atol=0)
        assert torch.equal(w.abs(), torch.ones_like(w)), \
            f"{s.name}: {int((w.abs() != 1).sum())} of {w.numel()} weights are not exactly +-1"
    # conversion modifies neither the model nor the ANN chain it returns
    after = binary_vgg6.state_dict()
    assert all(torch.equal(state[k], after[k]) for k in state)
    for g, src in zip([g for g in sign_conv.ann if g.binary], _binary_sources(binary_vgg6),
                      strict=True):
        assert torch.equal(_weighted(g.ops).weight, src.binary_weight())




@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_sign_mode_spikes_like_alpha_mode(binary_vgg6: nn.Module, digits_like: torch.Tensor,
                                          batches_from: Batches, granularity: str) -> None:
    """The same network up to float32 rounding: currents and thresholds divided by alpha.
    A spike could only flip where a potential lies within rounding of its threshold; on 50
    images x 32 steps (~10^6 spikes) none does."""
    alpha_net = convert(binary_vgg6, batches_from(digits_like, 20), 99.7, granularity).network
    sign_net = convert(binary_vgg6, batches_from(digits_like, 20), 99.7, granularity,
                       "sign").network
    gen = torch.Generator().manual_seed(6)
    x = torch.rand(50, 1, 8, 8, generator=gen)
    y = torch.randint(0, 10, (50,), generator=gen)
    a = Engine(alpha_net, SimOptions(32)).run_batch(x, y)
    s = Engine(sign_net, SimOptions(32)).run_batch(x, y)
    assert a.spikes.sum() > 10_000
    assert torch.equal(a.spikes, s.spikes)
    assert torch.equal(a.correct, s.correct)


def test_sign_mode_with_batchnorm_after_a_binary_conv(batches_from: Batches) -> None:
    """BN folds a per-channel scale into +-alpha: still +-alpha' per channel, so sign mode
    applies, with the BN shift as a bias divided by alpha'."""
    torch.manual_seed(9)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                          BinaryConv2d(4, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4),
                          nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 3))
    _randomise_bn(model, torch.Generator().manual_seed(0))
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    alpha_net = convert(model, batches_from(x, 20), 99.7).network
    sign_net = convert(model, batches_from(x, 20), 99.7, binary_weights="sign").network
    a, s = alpha_net.layers[1], sign_net.layers[1]
    assert s.binary and s.bias is not None and s.threshold.shape == (4, 1, 1)
    alpha = _weighted(a.ops).weight.abs().flatten(1)[:, 0]
    torch.testing.assert_close(s.bias.reshape(-1), a.bias.reshape(-1) / alpha, rtol=2e-7,
                               atol=0)
    y = torch.zeros(20, dtype=torch.long)
    ca = Engine(alpha_net, SimOptions(16)).run_batch(x, y)
    cs = Engine(sign_net, SimOptions(16)).run_batch(x, y)
    assert ca.spikes[1].sum() > 0
    assert torch.equal(ca.spikes, cs.spikes)


def test_sign_mode_refuses_weights_that_are_not_binary(batches_from: Batches) -> None:
    """A binary conv followed by a plain conv in the same group: the folded weight is not
    +-alpha, and sign mode must say so rather than produce wrong weights."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(),
                          BinaryConv2d(4, 4, 3, padding=1, bias=False),
                          nn.Conv2d(4, 4, 1, bias=False), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 8 * 8, 3))
    x = torch.rand(4, 1, 8, 8)
    convert(model, batches_from(x, 4), 99.7, binary_weights="alpha")
    with pytest.raises(ConversionError, match="conv1_2"):
        convert(model, batches_from(x, 4), 99.7, binary_weights="sign")


def _binary_output_chain() -> nn.Module:
    """Linear -> ReLU -> binary Linear as the output, its classes' alphas far apart, so
    dividing each class's current by its own alpha would reorder them."""
    torch.manual_seed(12)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 24), nn.ReLU(),
                          BinaryLinear(24, 4, bias=False))
    with torch.no_grad():
        model[3].weight.mul_(torch.tensor([0.25, 1.0, 4.0, 16.0])[:, None])
    return model.eval()


def _predictions(net: SpikingNetwork, x: torch.Tensor, classes: int, time: int) -> torch.Tensor:
    """(time, images): the class each image is predicted at each step, read off the engine's
    correct counts with one image and one label at a time."""
    out = torch.empty(time, len(x), dtype=torch.long)
    for i in range(len(x)):
        for c in range(classes):
            counts = Engine(net, SimOptions(time)).run_batch(x[i:i + 1], torch.tensor([c]))
            out[counts.correct.bool(), i] = c
    return out


def test_sign_mode_with_a_binary_output_layer_reads_out_like_alpha_mode(
        batches_from: Batches) -> None:
    """The output does not spike, so it has no threshold to take alpha: it keeps +-alpha and
    ranks the classes at every step exactly as alpha mode does (the same arithmetic)."""
    model = _binary_output_chain()
    x = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(13))
    alpha_net = convert(model, batches_from(x, 12), 99.7).network
    sign_net = convert(model, batches_from(x, 12), 99.7, binary_weights="sign").network
    assert sign_net.output.binary
    assert torch.equal(_weighted(sign_net.output.ops).weight,
                       _weighted(alpha_net.output.ops).weight)
    want = _predictions(alpha_net, x, 4, 16)
    assert len(set(want[-1].tolist())) > 1, "the readout must not be constant"
    assert torch.equal(_predictions(sign_net, x, 4, 16), want)
    with torch.no_grad():  # dividing by alpha would change them: the case can tell
        scaled = copy.deepcopy(sign_net)
        w = _weighted(scaled.output.ops).weight
        w.copy_(torch.sign(w))
    assert not torch.equal(_predictions(scaled, x, 4, 16), want)


# --------------------------------------------------------------------------------------------
# the pooling ablation's VGG-15s


VGG15_NAMES = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1)
               for i in range(1, n + 1)] + ["fc1", "fc2"]
POOLED = {1, 3, 6, 9, 12}  # the last conv of each block


@pytest.mark.parametrize("binary", [False, True])
def test_vgg15avg_pools_spikes_into_the_next_layer(batches_from: Batches, binary: bool) -> None:
    """ReLU then avg-pool: the pooling of a block's output is the start of the next layer's
    ops (linear on spikes), and lambda is, as always, the percentile of each ReLU's output."""
    torch.manual_seed(11)
    model = build_model("vgg15avg", 10, (3, 32, 32), binary=binary, width=1 / 8).eval()
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    net = convert(model, batches_from(x, 4), 99.7).network
    assert [layer.name for layer in net.layers] == VGG15_NAMES
    starts = [type(layer.ops[0]).__name__ for layer in net.layers]
    assert starts == ["AvgPool2d" if i - 1 in POOLED else "Conv2d" if i < 13 else "Linear"
                      for i in range(15)]
    assert [layer.delay for layer in net.layers] == [2 if i - 1 in POOLED else 1
                                                     for i in range(15)]
    for layer, act in zip(net.spiking, _relu_outputs(model, x), strict=True):
        torch.testing.assert_close(layer.lam, _np_percentile(act, 99.7), rtol=1e-6, atol=0)


@pytest.mark.parametrize("binary", [False, True])
def test_vgg15max_takes_the_max_of_each_steps_currents(batches_from: Batches,
                                                      binary: bool) -> None:
    """Max-pool before the ReLU, as the original converts it: within the layer, after its conv
    (the current of a step is the max over each window of the conv's currents of that step)."""
    torch.manual_seed(12)
    model = build_model("vgg15max", 10, (3, 32, 32), binary=binary, width=1 / 8).eval()
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    net = convert(model, batches_from(x, 4), 99.7, binary_weights="sign" if binary else "alpha")
    layers = net.network.layers
    assert [layer.name for layer in layers] == VGG15_NAMES
    for i, layer in enumerate(layers[:13]):
        kinds = [type(op).__name__ for op in layer.ops]
        assert kinds == (["Conv2d", "MaxPool2d"] if i in POOLED else ["Conv2d"]), layer.name
        assert layer.delay == (2 if i in POOLED else 1)
    for layer, act in zip(net.network.spiking, _relu_outputs(model, x), strict=True):
        torch.testing.assert_close(layer.lam, _np_percentile(act, 99.7), rtol=1e-6, atol=0)
    spikes = (torch.rand(3, *layers[0].shape, generator=torch.Generator().manual_seed(5))
              < 0.3).float()
    w = _weighted(layers[1].ops).weight
    assert torch.equal(layers[1].current(spikes),
                       F.max_pool2d(F.conv2d(spikes, w, padding=1), 2))


# --------------------------------------------------------------------------------------------
# names and fan-out


def test_names_vgg15ab(batches_from: Batches) -> None:
    torch.manual_seed(0)
    model = build_model("vgg15ab", 100, (3, 32, 32), binary=True)
    x = torch.rand(2, 3, 32, 32)
    net = convert(model, batches_from(x, 2), 99.7).network
    want = [f"conv{b}_{i}" for b, n in enumerate((2, 2, 3, 3, 3), 1) for i in range(1, n + 1)]
    assert [layer.name for layer in net.layers] == [*want, "fc1", "fc2"]
    assert [layer.kind for layer in net.layers] == ["conv"] * 13 + ["linear"] * 2
    fan = net.layers[-2].fan_out  # fc1 feeds Linear(4096 -> 100)
    assert fan.shape == (4096,) and bool((fan == 100).all())
    fan = net.layers[-3].fan_out.reshape(512, 1, 1)  # conv5_3 -> flatten -> Linear(512 -> 4096)
    assert bool((fan == 4096).all())


def test_fan_out_vgg6ab(digits_like: torch.Tensor, batches_from: Batches) -> None:
    torch.manual_seed(7)
    model = build_model("vgg6ab", 10, (1, 8, 8))
    with torch.no_grad():  # a silent output channel of conv2_1: 8 synapses fewer per neuron
        model.features[6].weight[5].zero_()
    net = convert(model, batches_from(digits_like, 40), 99.7).network
    names = [layer.name for layer in net.layers]
    assert names == ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "fc1", "fc2"]
    f = net.layers[0].fan_out.reshape(32, 8, 8)  # conv1_1 -> conv1_2 (32 out, 3x3, pad 1)
    assert f[:, 4, 4].eq(32 * 9).all() and f[:, 0, 0].eq(32 * 4).all()
    assert f[:, 0, 4].eq(32 * 6).all() and f[:, 7, 7].eq(32 * 4).all()
    f = net.layers[1].fan_out.reshape(32, 4, 4)  # conv1_2 (pooled to 4x4) -> conv2_1 (64 out)
    assert f[:, 1, 2].eq(63 * 9).all() and f[:, 0, 0].eq(63 * 4).all()
    f = net.layers[2].fan_out.reshape(64, 4, 4)  # conv2_1 -> conv2_2 (64 out)
    assert f[:, 2, 2].eq(64 * 9).all() and f[:, 3, 0].eq(64 * 4).all()
    assert net.layers[3].fan_out.eq(128).all()  # conv2_2 (64x2x2) -> flatten -> fc1 (128)
    assert net.layers[4].fan_out.eq(10).all()  # fc1 -> fc2 (10)
    assert net.output.fan_out is None


def test_fan_out_through_pooling(batches_from: Batches) -> None:
    """A layer whose next group starts with pooling (ReLU -> AvgPool -> Linear): each neuron
    reaches one pooled cell, which drives every output of the Linear."""
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(),
                          nn.AvgPool2d(2, ceil_mode=True), nn.Flatten(), nn.Linear(3 * 3 * 3, 7),
                          nn.ReLU(), nn.Linear(7, 2))
    net = convert(model, batches_from(torch.rand(8, 1, 5, 5), 8), 99.7).network
    assert net.layers[0].fan_out.tolist() == [7.0] * 75


# --------------------------------------------------------------------------------------------
# fidelity: the SNN against the trained ANN it came from (threshold balancing works)

BUNDLED = Path(bsnn.__file__).parent / "bundled"
FIDELITY_T = 64


def _bundled(name: str) -> nn.Module:
    if not (BUNDLED / f"{name}.pt").exists():
        pytest.skip(f"bsnn/bundled/{name}.pt is not there yet (the bundled model is trained "
                    "separately); the fidelity test needs a trained model")
    from bsnn.checkpoint import load_model

    return load_model(f"bundled:{name}")[0]


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(128 train images to set thresholds from, val images, val labels)."""
    data = pytest.importorskip("bsnn.data", reason="bsnn.data (the data sets) is not there yet")

    def stack(ds) -> tuple[torch.Tensor, torch.Tensor]:  # type: ignore[no-untyped-def]
        xs, ys = zip(*(ds[i] for i in range(len(ds))), strict=True)
        return torch.stack(xs), torch.tensor(ys)

    train, _ = data.load_split("digits", "train")
    val, _ = data.load_split("digits", "val")
    threshold_images, _ = stack(data.calibration_subset(train, 128, seed=0))
    x, y = stack(val)
    return threshold_images, x, y


@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("name", ["digits-fp", "digits-binary"])
def test_fidelity_to_the_ann(name: str, granularity: str, batches_from: Batches,
                             digits: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    """SNN accuracy at T=64 (same-step, subtract, p=99.7, thresholds from 128 training images)
    within one point of the ANN on the digits val split; and, with one threshold per layer, the
    firing rate x lambda_l over steps 32..63 within 12 % of the ANN's mean ReLU output in every
    layer (per-channel thresholds give each channel its own lambda, and the engine counts spikes
    per layer, so the rates are checked at layer granularity only).

    Measured with the bundled models (360 val images): ANN 96.94 % / SNN 97.50 % (FP),
    98.33 % / 98.06 % (binary); rate x lambda vs activation: -0.4 % ... -7.7 % (FP),
    -0.4 % ... -2.8 % (binary), the error growing with depth (transient, clipping at lambda).
    Thresholds 20 % too high keep the accuracy within a point (96.4 %) but miss the rates by
    17 % (first layer) to 60 % (fc1); reset to zero misses them by 15-73 %; theta = lambda_l
    instead of lambda_l / lambda_(l-1) gives 10 % accuracy.
    """
    model = _bundled(name)
    threshold_images, x, y = digits
    conv = convert(model, batches_from(threshold_images, 64), 99.7, granularity)
    with torch.no_grad():
        ann_accuracy = float((model(x).argmax(1) == y).double().mean())
        _, acts = chain_forward(conv.ann, x, keep=True)
    counts = Engine(conv.network, SimOptions(FIDELITY_T)).run_batch(x, y)
    snn_accuracy = float(counts.correct[-1]) / len(y)
    assert ann_accuracy > 0.9, "the bundled model is not trained"
    assert abs(snn_accuracy - ann_accuracy) <= 0.01, (snn_accuracy, ann_accuracy)
    if granularity == "channel":
        return  # rates per channel are not counted by the engine
    late = FIDELITY_T // 2
    errors = {}
    for layer, act, spikes in zip(conv.network.spiking, acts, counts.spikes, strict=True):
        rate = float(spikes[late:].sum()) / (FIDELITY_T - late) / layer.neurons / len(y)
        errors[layer.name] = rate * float(layer.lam) / float(act.mean()) - 1
    assert all(abs(e) < 0.12 for e in errors.values()), errors
