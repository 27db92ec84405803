"""The bindsnet backend against the engine: the same converted network, the same counters.

Spike counts per layer and step, synaptic operations and correct predictions per step must be
*exactly* the engine's. Both simulators do the same float32 ops (the backend's connections call
the layer's own `current`), so exactness only needs the same kernel calls: the engine runs with
`time_chunk=1`, one step per conv/linear call on the batch, as bindsnet does. With larger chunks
the engine stacks steps into one bigger batch, and oneDNN / BLAS may then sum in another order
(tests/test_engine.py covers that chunking on networks where every sum is exact).
"""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch
from torch import nn

from bsnn.backends.bindsnet import BindsnetBackend
from bsnn.conversion import convert
from bsnn.conversion.correction import correct_errors
from bsnn.errors import ConfigError
from bsnn.models import build_model
from bsnn.snn import options as sim_options
from bsnn.snn.engine import Engine
from bsnn.snn.network import SpikingNetwork
from bsnn.snn.options import SimOptions

pytest.importorskip("bindsnet", reason="the bindsnet backend is tested only where bindsnet "
                    "is installed: pip install 'bsnn[bindsnet]'")

Case = tuple[SpikingNetwork, torch.Tensor, torch.Tensor]


def _case(model: nn.Module, shape: tuple[int, ...], n: int, seed: int, **kwargs: str) -> Case:
    """A converted network, `n` images (its thresholds set from them too) and the ANN's labels,
    so the correct count climbs instead of staying at chance."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand((n, *shape), generator=gen)
    model.eval()
    with torch.no_grad():
        labels = model(x).argmax(1)
    return convert(model, lambda: [x], **kwargs).network, x, labels


def _with_bias(model: nn.Module, seed: int) -> nn.Module:
    """Nonzero biases and batch-norm statistics, so converted layers carry a bias."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.2 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
    return model


@pytest.fixture(scope="module")
def vgg6() -> Case:
    torch.manual_seed(0)
    return _case(build_model("vgg6ab", 10, (1, 8, 8)), (1, 8, 8), 6, seed=1)


@pytest.fixture(scope="module")
def vgg6_binary_channel() -> Case:
    """Channel-wise thresholds (so spike amplitudes) and binary weights folded to +-1."""
    torch.manual_seed(2)
    model = build_model("vgg6ab", 10, (1, 8, 8), binary=True)
    return _case(model, (1, 8, 8), 6, seed=3, granularity="channel", binary_weights="sign")


@pytest.fixture(scope="module")
def biased() -> Case:
    """Conv with bias + batch norm, avg-pool, flatten, linear with bias: every bias path."""
    torch.manual_seed(4)
    model = nn.Sequential(
        nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.AvgPool2d(2), nn.ReLU(),
        nn.Flatten(), nn.Linear(8 * 4 * 4, 32), nn.ReLU(), nn.Linear(32, 5),
    )
    return _case(_with_bias(model, 5), (2, 8, 8), 5, seed=6)


@pytest.fixture(scope="module")
def vgg8() -> Case:
    torch.manual_seed(7)
    return _case(build_model("vgg8ab", 10, (3, 32, 32)), (3, 32, 32), 3, seed=8,
                 granularity="channel")


@pytest.fixture(scope="module", params=["vgg15avg", "vgg15max"])
def ablation(request: pytest.FixtureRequest) -> Case:
    """The pooling ablation's VGG-15s, narrow: ReLU then avg-pool (a layer that starts with the
    pooling: delay 2), max-pool of the conv's currents before the ReLU (conv + max: delay 2)."""
    torch.manual_seed(9)
    model = build_model(request.param, 10, (3, 32, 32), width=1 / 8)
    return _case(model, (3, 32, 32), 4, seed=10)


def _assert_same(case: Case, options: SimOptions, batch_index: int = 0) -> None:
    net, x, labels = case
    want = Engine(net, dataclasses.replace(options, time_chunk=1)).run_batch(x, labels,
                                                                            batch_index)
    got = BindsnetBackend(net, options).run_batch(x, labels, batch_index)
    assert (want.spikes.sum(1) > 0).all(), "a silent layer would make the comparison vacuous"
    assert want.correct[-1] > 0
    assert torch.equal(got.spikes, want.spikes)
    assert torch.equal(got.synops, want.synops)
    assert torch.equal(got.correct, want.correct)


@pytest.mark.parametrize(("propagation", "encoding"), [
    ("same-step", "constant"), ("same-step", "poisson"), ("delayed", "constant"),
    ("delayed", "poisson"),
])
def test_vgg6_matches_engine(vgg6: Case, propagation: str, encoding: str) -> None:
    _assert_same(vgg6, SimOptions(time=24, propagation=propagation, encoding=encoding),
                 batch_index=2)


@pytest.mark.parametrize(("propagation", "reset", "v0"), [
    ("delayed", "zero", "half"),
    ("same-step", "zero", "zero"),
    ("same-step", "subtract", "half"),
])
def test_reset_and_initial_potential(vgg6: Case, propagation: str, reset: str, v0: str) -> None:
    _assert_same(vgg6, SimOptions(time=24, propagation=propagation, reset=reset, v0=v0))


@pytest.mark.parametrize("propagation", ["same-step", "delayed"])
def test_channel_thresholds_and_binary_weights(vgg6_binary_channel: Case,
                                               propagation: str) -> None:
    assert vgg6_binary_channel[0].layers[0].spike_amplitude is not None
    _assert_same(vgg6_binary_channel, SimOptions(time=24, propagation=propagation))


@pytest.mark.parametrize(("propagation", "encoding"), [
    ("same-step", "poisson"), ("delayed", "poisson"), ("delayed", "constant"),
])
def test_biases(biased: Case, propagation: str, encoding: str) -> None:
    assert all(layer.bias is not None for layer in biased[0].layers)
    _assert_same(biased, SimOptions(time=24, propagation=propagation, encoding=encoding))


@pytest.mark.parametrize("propagation", ["same-step", "delayed"])
def test_vgg8_conv_avgpool_matches_engine(vgg8: Case, propagation: str) -> None:
    """Delayed, the readout first hears from the network at step 11 (three conv + pool layers
    of two steps each), so T is well above that."""
    _assert_same(vgg8, SimOptions(time=24, propagation=propagation))


@pytest.mark.parametrize("propagation", ["same-step", "delayed"])
def test_pooling_ablation_matches_engine(ablation: Case, propagation: str) -> None:
    """Delayed: the pass-through layers give the original's timing, as the engine's delays do."""
    assert any(layer.delay == 2 for layer in ablation[0].layers)
    _assert_same(ablation, SimOptions(time=40, propagation=propagation))


def test_batches_are_independent_and_input_untouched(vgg6: Case) -> None:
    """State is renewed per batch, and bindsnet's Input (whose `s` is the caller's tensor after
    a run) never writes into the image."""
    net, x, labels = vgg6
    backend = BindsnetBackend(net, SimOptions(time=12))
    x_before = x.clone()
    first = backend.run_batch(x, labels)
    again = backend.run_batch(x, labels)
    assert torch.equal(x, x_before)
    assert torch.equal(first.spikes, again.spikes)
    assert torch.equal(first.correct, again.correct)


OPTION_VALUES = [(name, value) for name, allowed in (
    ("propagation", sim_options.PROPAGATIONS), ("reset", sim_options.RESETS),
    ("v0", sim_options.INITIAL_POTENTIALS), ("encoding", sim_options.ENCODINGS),
) for value in allowed]


@pytest.mark.parametrize(("name", "value"), OPTION_VALUES,
                         ids=[f"{n}={v}" for n, v in OPTION_VALUES])
def test_every_option_value_is_simulated_like_the_engine(vgg6: Case, name: str,
                                                         value: str) -> None:
    """The backend keeps no list of choices: SimOptions refuses unknown values before it sees
    them, so it must simulate every value SimOptions accepts (a new one fails here until the
    backend handles it)."""
    _assert_same(vgg6, SimOptions(time=24, **{name: value}))  # type: ignore[arg-type]


def test_missing_bindsnet_is_a_config_error(vgg6: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "bindsnet", None)  # `import bindsnet` now fails
    with pytest.raises(ConfigError, match="needs bindsnet") as info:
        BindsnetBackend(vgg6[0], SimOptions(time=4))
    assert "pip install" in info.value.fix


@pytest.mark.parametrize("mode", ["bias", "potential"])
def test_snn_calibrated_network_matches_engine(mode: str) -> None:
    """SNN calibration changes biases or initial potentials; bindsnet must see the same."""
    torch.manual_seed(0)
    model = build_model("vgg6ab", 10, (1, 8, 8)).eval()
    x = torch.rand((6, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        labels = model(x).argmax(1)
    conversion = convert(model, lambda: [x])
    net = conversion.network
    correct_errors(net, conversion.ann, lambda: [x], SimOptions(time=12), mode)
    changed = [layer.v_init if mode == "potential" else layer.bias for layer in net.spiking]
    assert all(t is not None for t in changed)
    _assert_same((net, x, labels), SimOptions(time=12, propagation="delayed"))
