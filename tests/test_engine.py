"""The simulation engine against the reference simulator (tests/reference_sim.py).

Spike counts per layer and step, synaptic operations and correct predictions per step must be
*exactly* those of the reference, for every combination of options, on small random networks.

Exactness needs one precaution. On CPU, float32 conv/linear results depend in their last bits
on the batch size (oneDNN / BLAS pick other kernels and summation orders for 3 images than for
3 x 12 stacked time steps), and the engine stacks time steps into one batch while the reference
does one step at a time; a neuron sitting within an ulp of its threshold could then spike in one
and not the other. So the converted networks are rounded onto a dyadic grid after conversion:
every weight of every op, every spike amplitude and the output bias have a few significant bits,
the images are multiples of 1/16, so every sum inside a conv/linear/avg-pool is exact in float32
in any order. Thresholds, hidden biases and membrane potentials keep arbitrary float32 values:
they enter elementwise operations that both simulators do identically.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
from collections.abc import Callable
from types import SimpleNamespace

import pytest
import torch
from reference_sim import simulate
from torch import nn

from bsnn.conversion import chain_forward, convert
from bsnn.errors import ConfigError
from bsnn.models import BinaryConv2d, BinaryLinear, build_model
from bsnn.snn import options as sim_options
from bsnn.snn.engine import Engine, HalfCurrent, choose_chunk
from bsnn.snn.network import SpikingLayer, SpikingNetwork
from bsnn.snn.options import SimOptions

pytestmark = pytest.mark.usefixtures("one_thread")

T = 12
N_IMAGES = 3

# --------------------------------------------------------------------------------------------
# small random networks


def _randomise(model: nn.Module, gen: torch.Generator) -> nn.Module:
    """Biases and batch-norm statistics that matter (defaults are zeros and ones)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=gen))
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
    return model.eval()


def _linear_chain(binary: bool) -> nn.Module:
    mid = BinaryLinear if binary else nn.Linear
    return nn.Sequential(
        nn.Flatten(), nn.Linear(16, 24), nn.ReLU(), nn.Dropout(0.5),
        mid(24, 20), nn.ReLU(), nn.Linear(20, 5),
    )


def _conv_pool_chain(binary: bool) -> nn.Module:
    """conv -> ReLU -> avg-pool(ceil) + conv + avg-pool(ceil) -> ReLU -> flatten + linear ..."""
    mid = BinaryConv2d if binary else nn.Conv2d
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(),
        nn.AvgPool2d(2, ceil_mode=True),  # 5x5 -> 3x3, a group that starts with pooling
        mid(6, 8, 3, padding=1), nn.AvgPool2d(2, ceil_mode=True), nn.ReLU(),  # 3x3 -> 2x2
        nn.Flatten(), nn.Linear(8 * 2 * 2, 12), nn.ReLU(), nn.Linear(12, 4),
    )


def _batchnorm_chain(binary: bool) -> nn.Module:
    mid = BinaryConv2d if binary else nn.Conv2d
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        mid(4, 6, 3, stride=2, padding=1), nn.AvgPool2d(2, ceil_mode=True), nn.ReLU(),  # 6->3->2
        nn.Flatten(), nn.Linear(24, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Dropout(),
        nn.Linear(10, 3),
    )


def _max_pool_chain(binary: bool) -> nn.Module:
    """conv -> BN -> max-pool(ceil) -> ReLU (the max of each step's currents, bias after it),
    conv -> max-pool -> ReLU, then the classifier: the pooling ablation's VGG_15_max in small."""
    mid = BinaryConv2d if binary else nn.Conv2d
    return nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1), nn.BatchNorm2d(6), nn.MaxPool2d(2, ceil_mode=True),
        nn.ReLU(),  # 5x5 -> 3x3
        mid(6, 8, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(), nn.Dropout(),  # 3x3 -> 1x1
        nn.Flatten(), nn.Linear(8, 12), nn.ReLU(), nn.Linear(12, 4),
    )


NETS: dict[str, tuple[Callable[[bool], nn.Module], tuple[int, int, int]]] = {
    "vgg6ab": (lambda binary: build_model("vgg6ab", 10, (1, 8, 8), binary=binary), (1, 8, 8)),
    "linear": (_linear_chain, (1, 4, 4)),
    "conv-pool": (_conv_pool_chain, (2, 5, 5)),
    "batchnorm": (_batchnorm_chain, (1, 6, 6)),
    "max-pool": (_max_pool_chain, (2, 5, 5)),
}
VARIANTS = {"fp": (False, "alpha"), "binary-alpha": (True, "alpha"), "binary-sign": (True, "sign")}


def _images(n: int, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Random images, multiples of 1/16 in [0, 1]."""
    return torch.randint(0, 17, (n, *shape), generator=gen).float() / 16


def _dyadic(t: torch.Tensor, bits: int = 6) -> torch.Tensor:
    """Round onto the grid 2^(e - bits + 1), e the exponent of max |t|: `bits` significant bits."""
    top = float(t.abs().max())
    if top == 0:
        return t.clone()
    step = 2.0 ** (math.floor(math.log2(top)) - bits + 1)
    return torch.round(t / step) * step


def _on_grid(net: SpikingNetwork) -> SpikingNetwork:
    """A copy of `net` whose conv/linear/pool sums are exact in float32 (see the module doc)."""
    layers = []
    for layer in net.layers:
        ops = copy.deepcopy(layer.ops)
        for op in ops:
            if isinstance(op, nn.Conv2d | nn.Linear):
                op.weight.data = _dyadic(op.weight.data)
        amplitude = layer.spike_amplitude
        if amplitude is not None:
            amplitude = (torch.round(amplitude * 32) / 32).clamp(min=1 / 32)
        bias = layer.bias
        if layer.is_output and bias is not None:
            weights = [op.weight for op in ops if isinstance(op, nn.Conv2d | nn.Linear)]
            step = 2.0 ** (math.floor(math.log2(float(weights[-1].abs().max()))) - 10)
            bias = torch.round(bias / step) * step
        layers.append(dataclasses.replace(layer, ops=ops, spike_amplitude=amplitude, bias=bias))
    return dataclasses.replace(net, layers=layers)


@dataclasses.dataclass
class Case:
    net: SpikingNetwork
    x: torch.Tensor
    labels: torch.Tensor


@functools.cache
def _case(net_name: str, variant: str, granularity: str) -> Case:
    build, shape = NETS[net_name]
    binary, binary_weights = VARIANTS[variant]
    gen = torch.Generator().manual_seed(1234)
    torch.manual_seed(1234)  # the models' own initialisation
    model = _randomise(build(binary), gen)
    threshold_images = _images(20, shape, gen)
    conv = convert(model, lambda: [threshold_images[:7], threshold_images[7:]], 99.7, granularity,
                   binary_weights)
    x = _images(N_IMAGES, shape, gen)
    with torch.no_grad():
        labels = chain_forward(conv.ann, x)[0].argmax(1)
    labels[0] = (labels[0] + 1) % labels.new_tensor(conv.network.output.shape[0])
    return Case(_on_grid(conv.network), x, labels)


def _assert_same(counts, ref, what: str) -> None:  # type: ignore[no-untyped-def]
    assert torch.equal(counts.spikes.cpu(), ref.spikes), (
        f"{what}: spikes differ\nengine\n{counts.spikes}\nreference\n{ref.spikes}")
    assert torch.equal(counts.synops.cpu(), ref.synops), (
        f"{what}: synops differ\nengine\n{counts.synops}\nreference\n{ref.synops}")
    assert torch.equal(counts.correct.cpu(), ref.correct), (
        f"{what}: correct differ: engine {counts.correct} reference {ref.correct}")


# --------------------------------------------------------------------------------------------
# the engine == the reference, every combination

MODELS = [(n, v) for n in NETS for v in VARIANTS]
SIMS = list(itertools.product(("same-step", "delayed"), ("subtract", "zero"), ("zero", "half"),
                              ("constant", "poisson")))
SIM_PARAMS = [pytest.param(*sim, id="-".join(sim)) for sim in SIMS]


@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize(("net_name", "variant"), MODELS, ids=[f"{n}-{v}" for n, v in MODELS])
@pytest.mark.parametrize(("propagation", "reset", "v0", "encoding"), SIM_PARAMS)
def test_engine_equals_reference(net_name: str, variant: str, granularity: str,
                                 propagation: str, reset: str, v0: str, encoding: str) -> None:
    case = _case(net_name, variant, granularity)
    ref = simulate(case.net, case.x, case.labels, T, propagation, reset, v0, encoding,
                   seed=7, batch_index=2)
    assert ref.spikes.sum() > 0, "the case is degenerate: nothing spikes"
    for chunk in (5, T, None):  # None: the engine's own choice (one step on CPU)
        opt = SimOptions(T, propagation, reset, v0, encoding, seed=7, time_chunk=chunk)
        counts = Engine(case.net, opt).run_batch(case.x, case.labels, batch_index=2)
        _assert_same(counts, ref, f"time_chunk={chunk}")


@pytest.mark.parametrize(("net_name", "propagation"),
                         [("linear", "same-step"), ("linear", "delayed"),
                          ("max-pool", "same-step"), ("vgg6ab", "delayed")])
def test_exact_float16_equals_reference(net_name: str, propagation: str) -> None:
    """precision fp16: the +-1 layers of --binary-weights sign in float16 give the reference's
    counts exactly; at least one layer of each case takes the float16 path."""
    case = _case(net_name, "binary-sign", "layer")
    ref = simulate(case.net, case.x, case.labels, T, propagation)
    engine = Engine(case.net, SimOptions(T, propagation, precision="fp16"))
    counts = engine.run_batch(case.x, case.labels)
    assert any(isinstance(f, HalfCurrent) for f in engine.currents(case.x.device)), \
        "no layer took the float16 path"
    _assert_same(counts, ref, "precision fp16")


def test_cases_are_not_degenerate() -> None:
    """Every layer of every test network spikes, and the readout gets some images right and some
    wrong, its count changing over the steps on some networks, so the exact comparisons above
    compare something."""
    varying = []
    for (net_name, variant), granularity in itertools.product(MODELS, ("layer", "channel")):
        what = (net_name, variant, granularity)
        case = _case(net_name, variant, granularity)
        ref = simulate(case.net, case.x, case.labels, T)
        assert (ref.spikes.sum(1) > 0).all(), (what, ref.spikes)
        assert ref.correct.max() > 0 and ref.correct.min() < N_IMAGES, (what, ref.correct)
        if len(set(ref.correct.tolist())) > 1:
            varying.append(what)
    assert len(varying) >= 4, varying


def test_poisson_input_depends_on_seed_and_batch() -> None:
    case = _case("vgg6ab", "fp", "layer")
    runs = [Engine(case.net, SimOptions(T, encoding="poisson", seed=s)).run_batch(
        case.x, case.labels, batch_index=b).spikes for s, b in ((0, 0), (1, 0), (0, 1), (0, 0))]
    assert not torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])
    assert torch.equal(runs[0], runs[3])


# --------------------------------------------------------------------------------------------
# delayed propagation keeps the original's timing


def _original_first_steps(model: nn.Module) -> list[int]:
    """The first step at which each spiking layer, then the readout, can receive anything in the
    original without --one-step, from its topology's rules (SNN-Conversion,
    bindsnet/conversion/conversion.py, `ann_to_snn`): walking features then classifier, every
    Conv2d, Linear, AvgPool2d and MaxPool2d adds one BindsNET layer (a conv followed by a
    pooling adds a pass-through layer, anything else IF neurons); ReLU and Dropout add none.
    Its `Network.run` feeds each layer its source's state of the step before, and the input
    layer holds the image from step 0, so the n-th layer added first gets the image's effect
    at step n. bsnn's spiking layers are the layers before each ReLU; the readout the last."""
    added, steps = 0, []
    for module in [*model.features, *model.classifier]:
        if isinstance(module, nn.Conv2d | nn.Linear | nn.AvgPool2d | nn.MaxPool2d):
            added += 1
        elif isinstance(module, nn.ReLU):
            steps.append(added)
    return [*steps, added]


def test_original_first_steps_as_counted_by_hand() -> None:
    """The rule above on the two nets read by hand: vgg6ab (the bundled digits models): conv
    (1), conv + pass-through + pool (3), conv (4), conv + pass-through + pool (6), fc (7), readout
    (8); vgg15ab the same per block, 13 convs, fc, readout."""
    assert _original_first_steps(build_model("vgg6ab", 10, (1, 8, 8))) == [1, 3, 4, 6, 7, 8]
    vgg15 = _original_first_steps(build_model("vgg15ab", 10, (3, 32, 32), width=1 / 16))
    assert vgg15 == [1, 3, 4, 6, 7, 8, 10, 11, 12, 14, 15, 16, 18, 19, 20]


def _eager_network(model: nn.Module, shape: tuple[int, int, int]) -> SpikingNetwork:
    """`model` with positive weights, converted, then thresholds so low that a neuron spikes at
    the first step it receives anything: each layer spikes as early as the timing allows. The
    readout's only nonzero row is the last class's, so the prediction turns from class 0 to the
    last class at the first step the readout receives anything."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                m.weight.abs_()
        model.classifier[-1].weight[:-1] = 0
    ones = torch.ones(2, *shape)
    net = convert(model.eval(), lambda: [ones]).network
    eager = [dataclasses.replace(layer, threshold=torch.tensor(1e-6)) for layer in net.spiking]
    return dataclasses.replace(net, layers=[*eager, net.output])


def _first_steps(net: SpikingNetwork, shape: tuple[int, int, int], propagation: str,
                 chunk: int) -> list[int]:
    """The first step of each layer's first spike, then of the readout's turn to the last class."""
    classes = net.output.shape[0]
    opt = SimOptions(T + 12, propagation, time_chunk=chunk)
    counts = Engine(net, opt).run_batch(torch.ones(2, *shape), torch.tensor([classes - 1] * 2))
    firsts = [int(row.nonzero()[0]) for row in counts.spikes]
    return [*firsts, int(counts.correct.nonzero()[0])]


@pytest.mark.parametrize(("arch", "shape"), [
    ("vgg6ab", (1, 8, 8)), ("vgg8ab", (3, 32, 32)), ("vgg15ab", (3, 32, 32)),
    ("vgg15avg", (3, 32, 32)), ("vgg15max", (3, 32, 32)),
])
def test_delayed_first_spikes_are_the_originals(arch: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    model = build_model(arch, 10, shape, width=1 / 8 if arch.startswith("vgg15") else 1)
    want = _original_first_steps(model)
    net = _eager_network(model, shape)
    assert [layer.delay for layer in net.layers] == [b - a for a, b in
                                                     itertools.pairwise([0, *want])]
    for chunk in (1, 4):
        assert _first_steps(net, shape, "delayed", chunk) == want, chunk
        assert _first_steps(net, shape, "same-step", chunk) == [0] * len(want), chunk
    ref = simulate(net, torch.ones(2, *shape), torch.zeros(2, dtype=torch.long), T + 12,
                   "delayed")
    assert [int(row.nonzero()[0]) for row in ref.spikes] == want[:-1]


# --------------------------------------------------------------------------------------------
# options: refused where they are made, so the engine never sees a bad one

BAD_OPTIONS = [
    ("propagation", "same_step"), ("propagation", ""), ("reset", "substract"),
    ("reset", "Subtract"), ("v0", "theta/2"), ("encoding", "rate"),
    ("time", 0), ("time", -3), ("time", sim_options.MAX_TIME + 1), ("time", 2.0),
    ("time", True), ("readout_delay", -1), ("readout_delay", T), ("readout_delay", 1.5),
    ("time_chunk", 0), ("time_chunk", -1), ("time_chunk", 2.0), ("seed", 1.0), ("seed", "7"),
    ("seed", False), ("precision", "bf16"), ("precision", "FP16"),
]


@pytest.mark.parametrize(("name", "value"), BAD_OPTIONS,
                         ids=[f"{n}={v!r}" for n, v in BAD_OPTIONS])
def test_bad_option_is_a_config_error(name: str, value: object) -> None:
    kwargs = {"time": T, name: value}
    with pytest.raises(ConfigError, match=name.replace("_", " ")) as info:
        SimOptions(**kwargs)  # type: ignore[arg-type]
    assert info.value.fix, "the error says how to fix it"
    with pytest.raises(ConfigError):  # nor can a good one be turned bad afterwards
        dataclasses.replace(SimOptions(T), **{name: value})


def test_unknown_string_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="'substract'") as info:
        SimOptions(T, reset="substract")
    assert info.value.fix == f"use one of: {', '.join(sim_options.RESETS)}"
    with pytest.raises(dataclasses.FrozenInstanceError):
        SimOptions(T).reset = "substract"  # type: ignore[misc]


@pytest.mark.parametrize(("name", "allowed"), [
    ("propagation", sim_options.PROPAGATIONS), ("reset", sim_options.RESETS),
    ("v0", sim_options.INITIAL_POTENTIALS), ("encoding", sim_options.ENCODINGS)])
def test_every_choice_is_accepted_and_simulated(name: str, allowed: tuple[str, ...]) -> None:
    """Each allowed value is taken, and changes what the engine does (none is ignored)."""
    case = _case("vgg6ab", "fp", "layer")
    runs = [Engine(case.net, SimOptions(T, **{name: value})).run_batch(case.x, case.labels)
            for value in allowed]
    assert all(not torch.equal(a.spikes, b.spikes) for a, b in itertools.combinations(runs, 2))


def test_edge_values_are_accepted() -> None:
    """The extremes of each range are kept as given, and one step beyond each is refused."""
    top = sim_options.MAX_TIME
    assert SimOptions(1).time == 1
    edge = SimOptions(top, readout_delay=top - 1, time_chunk=1)
    assert (edge.time, edge.readout_delay, edge.time_chunk) == (top, top - 1, 1)
    assert SimOptions(T, readout_delay=0, time_chunk=None, seed=-5).seed == -5
    for beyond in ({"time": 0}, {"time": top + 1}, {"time": top, "readout_delay": top},
                   {"time": 1, "time_chunk": 0}):
        with pytest.raises(ConfigError):
            SimOptions(**beyond)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# time chunks


@pytest.mark.parametrize("propagation", ["same-step", "delayed"])
@pytest.mark.parametrize("encoding", ["constant", "poisson"])
@pytest.mark.parametrize(("net_name", "variant", "granularity"),
                         [("vgg6ab", "binary-alpha", "channel"), ("conv-pool", "fp", "layer")])
def test_time_chunk_does_not_change_results(net_name: str, variant: str, granularity: str,
                                            propagation: str, encoding: str) -> None:
    case = _case(net_name, variant, granularity)
    results = {}
    for chunk in (1, 3, T):
        opt = SimOptions(T, propagation, "subtract", "half", encoding, seed=3, time_chunk=chunk)
        if chunk == 1 and propagation == "delayed" and encoding == "poisson":
            continue  # covered by test_delayed_poisson_step_by_step (a known engine bug)
        results[chunk] = Engine(case.net, opt).run_batch(case.x, case.labels)
    first = results[T]
    for chunk, counts in results.items():
        assert torch.equal(counts.spikes, first.spikes), chunk
        assert torch.equal(counts.synops, first.synops), chunk
        assert torch.equal(counts.correct, first.correct), chunk


def test_delayed_poisson_step_by_step() -> None:
    """time_chunk=1 with delayed propagation and Poisson input (plain step-by-step)."""
    case = _case("vgg6ab", "fp", "layer")
    ref = simulate(case.net, case.x, case.labels, T, "delayed", encoding="poisson", seed=5)
    opt = SimOptions(T, "delayed", encoding="poisson", seed=5, time_chunk=1)
    counts = Engine(case.net, opt).run_batch(case.x, case.labels)
    _assert_same(counts, ref, "time_chunk=1")


def test_time_chunk_on_unrounded_network() -> None:
    """Without the dyadic rounding, stacking steps changes float32 sums in their last bits;
    on this small network that flips no spike (a flip would need a potential within an ulp
    of the threshold). This documents that the rounding above is a precaution, not a crutch."""
    gen = torch.Generator().manual_seed(99)
    torch.manual_seed(99)
    model = build_model("vgg6ab", 10, (1, 8, 8), binary=True)
    threshold_images = torch.rand(16, 1, 8, 8, generator=gen)
    net = convert(model, lambda: [threshold_images], 99.7, "channel").network
    x = torch.rand(3, 1, 8, 8, generator=gen)
    y = torch.tensor([0, 1, 2])
    ref = simulate(net, x, y, T)
    assert (ref.spikes.sum(1) > 0).all()
    for chunk in (1, 3, T):
        counts = Engine(net, SimOptions(T, time_chunk=chunk)).run_batch(x, y)
        _assert_same(counts, ref, f"time_chunk={chunk}")


# --------------------------------------------------------------------------------------------
# IF neurons on known currents


def _one_neuron_net(threshold: float = 1.0) -> SpikingNetwork:
    """Input (1,1,1) -> identity weight -> one IF neuron -> readout [[1], [0]] + bias [0, 1/4].

    Class 0 collects the neuron's spikes, class 1 gains 1/4 per step: the prediction is class 0
    at step t when the spikes received so far are >= (t + 1) / 4 (ties go to the first index).
    """
    w_in = nn.Linear(1, 1, bias=False)
    w_in.weight.data.fill_(1.0)
    w_out = nn.Linear(1, 2, bias=False)
    w_out.weight.data = torch.tensor([[1.0], [0.0]])
    neuron = SpikingLayer(
        name="if", kind="linear", ops=nn.Sequential(nn.Flatten(), w_in), bias=None,
        threshold=torch.tensor(threshold), lam=torch.tensor(threshold), shape=(1,),
        fan_out=torch.tensor([1.0]))
    readout = SpikingLayer(name="out", kind="linear", ops=nn.Sequential(w_out),
                           bias=torch.tensor([0.0, 0.25]), threshold=None, lam=None, shape=(2,))
    return SpikingNetwork([neuron, readout], (1, 1, 1), 99.7, "layer")


# constant current 3/8 (exact in binary), threshold 1: the steps at which the neuron fires
SPIKE_STEPS = {
    ("subtract", "zero"): [2, 5, 7, 10],  # v = 3/8 (t + 1) - spikes so far
    ("subtract", "half"): [1, 3, 6, 9, 11],  # the same, starting at 1/2
    ("zero", "zero"): [2, 5, 8, 11],  # every third step
    ("zero", "half"): [1, 4, 7, 10],  # 1/2 + 3/4 >= 1 at step 1, then every third step
}


@pytest.mark.parametrize("propagation", ["same-step", "delayed"])
@pytest.mark.parametrize(("reset", "v0"), list(SPIKE_STEPS))
def test_if_neuron_on_constant_current(reset: str, v0: str, propagation: str) -> None:
    net = _one_neuron_net()
    x = torch.full((1, 1, 1, 1), 0.375)
    delay = 1 if propagation == "delayed" else 0
    steps = [t + delay for t in SPIKE_STEPS[reset, v0] if t + delay < T]
    expected_spikes = torch.zeros(T, dtype=torch.float64)
    expected_spikes[steps] = 1
    # the readout sees each spike `delay` steps after it is made
    received = [sum(1 for s in steps if s + delay <= t) for t in range(T)]
    expected_correct = torch.tensor([int(r >= (t + 1) / 4) for t, r in enumerate(received)])
    for chunk in (1, 4, T):
        opt = SimOptions(T, propagation, reset, v0, time_chunk=chunk)
        counts = Engine(net, opt).run_batch(x, torch.tensor([0]))
        assert counts.spikes[0].tolist() == expected_spikes.tolist(), chunk
        assert counts.synops[0].tolist() == expected_spikes.tolist(), chunk  # fan-out 1
        assert counts.correct.tolist() == expected_correct.tolist(), chunk
    ref = simulate(net, x, torch.tensor([0]), T, propagation, reset, v0)
    assert ref.spikes[0].tolist() == expected_spikes.tolist()
    assert ref.correct.tolist() == expected_correct.tolist()


def test_per_channel_threshold_and_half_potential() -> None:
    """Two channels with thresholds 1 and 2, current 3/8: v0 = theta/2 per channel."""
    net = _one_neuron_net()
    w = nn.Linear(1, 2, bias=False)
    w.weight.data.fill_(1.0)
    neuron = dataclasses.replace(net.layers[0], ops=nn.Sequential(nn.Flatten(), w), shape=(2,),
                                 threshold=torch.tensor([1.0, 2.0]),
                                 fan_out=torch.tensor([1.0, 1.0]))
    w_out = nn.Linear(2, 2, bias=False)
    w_out.weight.data = torch.tensor([[1.0, 1.0], [0.0, 0.0]])
    readout = dataclasses.replace(net.layers[1], ops=nn.Sequential(w_out))
    net = dataclasses.replace(net, layers=[neuron, readout])
    counts = Engine(net, SimOptions(T, v0="half")).run_batch(torch.full((1, 1, 1, 1), 0.375),
                                                             torch.tensor([0]))
    # channel 0: [1, 3, 6, 9, 11] (above); channel 1: 1 + 3/8 (t + 1) >= 2 k
    ch1 = [t for t in range(T) if math.floor((1 + 0.375 * (t + 1)) / 2)
           > math.floor((1 + 0.375 * t) / 2)]
    expected = [int(t in SPIKE_STEPS["subtract", "half"]) + int(t in ch1) for t in range(T)]
    assert ch1 == [2, 7]
    assert counts.spikes[0].tolist() == expected


def test_max_pool_takes_the_max_of_each_steps_currents() -> None:
    """Two neurons that fire on alternate steps (current 1/2, one starting at 1/2) feed a conv
    + max-pool over both: the pooled current is 1 at every step (the max of that step's
    currents, as the original's MaxPool2dConnection on its pass-through layer), so the pooled
    neuron (threshold 1) fires every step, not at the max of the two rates (every other step)."""
    def unit_conv() -> nn.Conv2d:
        conv = nn.Conv2d(1, 1, 1, bias=False)
        conv.weight.data.fill_(1.0)
        return conv

    pair = SpikingLayer(name="pair", kind="conv", ops=nn.Sequential(unit_conv()), bias=None,
                        threshold=torch.tensor(1.0), lam=torch.tensor(1.0), shape=(1, 1, 2),
                        fan_out=torch.ones(2), v_init=torch.tensor([[[0.5, 0.0]]]))
    pooled = SpikingLayer(name="pooled", kind="conv",
                          ops=nn.Sequential(unit_conv(), nn.MaxPool2d((1, 2))), bias=None,
                          threshold=torch.tensor(1.0), lam=torch.tensor(1.0), shape=(1, 1, 1),
                          fan_out=torch.ones(1), delay=2)
    net = dataclasses.replace(_one_neuron_net(), input_shape=(1, 1, 2))
    readout = dataclasses.replace(net.output, ops=nn.Sequential(nn.Flatten(), net.output.ops[0]))
    net = dataclasses.replace(net, layers=[pair, pooled, readout])
    x = torch.full((1, 1, 1, 2), 0.5)
    counts = Engine(net, SimOptions(T)).run_batch(x, torch.tensor([0]))
    assert counts.spikes[0].tolist() == [1.0] * T  # one of the pair each step
    assert counts.spikes[1].tolist() == [1.0] * T
    for propagation in ("same-step", "delayed"):
        ref = simulate(net, x, torch.tensor([0]), T, propagation)
        got = Engine(net, SimOptions(T, propagation, time_chunk=5)).run_batch(x,
                                                                             torch.tensor([0]))
        _assert_same(got, ref, propagation)


# --------------------------------------------------------------------------------------------
# work done once, counters, devices


@pytest.mark.parametrize("propagation", ["same-step", "delayed"])
def test_first_layer_constant_current_computed_once(propagation: str) -> None:
    case = _case("vgg6ab", "fp", "layer")
    first_op = case.net.layers[0].ops[0]
    seen: list[torch.Tensor] = []
    handle = first_op.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    try:
        calls = {}
        for time in (4, T):
            seen.clear()
            Engine(case.net, SimOptions(time, propagation, time_chunk=1)).run_batch(
                case.x, case.labels)
            calls[time] = len(seen)
            on_images = [s for s in seen if s.shape == case.x.shape and torch.equal(s, case.x)]
            assert len(on_images) == 1, f"T={time}: the images went through the first op " \
                                        f"{len(on_images)} times"
            assert all((s.shape == case.x.shape and torch.equal(s, case.x)) or not s.any()
                       for s in seen), "the first op saw something other than the images or 0"
    finally:
        handle.remove()
    assert calls[4] == calls[T] <= 2, calls


def test_synops_exact_above_float32_integer_range() -> None:
    """Synops per step can exceed 2^24 (ImageNet VGG-15, batch 64: conv1_1 alone has 3.2 M
    neurons x fan-out 576); the counters are float64 and must stay exact integers."""
    n = 16384
    gen = torch.Generator().manual_seed(0)
    fan_out = (2 * torch.randint(2000, 5000, (n,), generator=gen) + 1).float()  # odd, < 2^14
    w_in = nn.Linear(1, n, bias=False)
    w_in.weight.data.fill_(1.0)
    w_out = nn.Linear(n, 2, bias=False)
    w_out.weight.data.fill_(1.0)
    layer = SpikingLayer(name="wide", kind="linear", ops=nn.Sequential(nn.Flatten(), w_in),
                         bias=None, threshold=torch.tensor(1.0), lam=torch.tensor(1.0),
                         shape=(n,), fan_out=fan_out)
    readout = SpikingLayer(name="out", kind="linear", ops=nn.Sequential(w_out), bias=None,
                           threshold=None, lam=None, shape=(2,))
    net = SpikingNetwork([layer, readout], (1, 1, 1), 99.7, "layer")
    x = torch.ones(2, 1, 1, 1)  # every neuron fires every step
    want = 2 * fan_out.double().sum()
    assert want > 2**24
    counts = Engine(net, SimOptions(3)).run_batch(x, torch.tensor([0, 1]))
    assert counts.spikes[0].tolist() == [2.0 * n] * 3
    assert counts.synops[0].tolist() == [float(want)] * 3


def test_network_to_leaves_the_original_alone() -> None:
    """`net.to(device)` returns a new network; the original must stay usable where it was.
    (The meta device stands in for CUDA, so this runs on any machine.)"""
    net = copy.deepcopy(_case("linear", "fp", "layer").net)
    moved = net.to("meta")
    assert all(p.device.type == "meta" for layer in moved.layers for p in layer.ops.parameters())
    assert all(p.device.type == "cpu" for layer in net.layers for p in layer.ops.parameters())


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")


@needs_cuda
@pytest.mark.parametrize(("net_name", "variant", "granularity"),
                         [("linear", "binary-sign", "channel"), ("vgg6ab", "binary-alpha",
                                                                 "layer"),
                          ("batchnorm", "fp", "channel"), ("max-pool", "binary-sign", "layer")])
@pytest.mark.parametrize("encoding", ["constant", "poisson"])
def test_cuda_gives_cpu_counts(net_name: str, variant: str, granularity: str,
                               encoding: str) -> None:
    """Same counts on CUDA as on CPU. The networks are on the dyadic grid, so conv/linear sums
    are exact on both (TF32 included: 6 significant bits fit its 10-bit mantissa)."""
    case = _case(net_name, variant, granularity)
    opt = SimOptions(T, "delayed", "subtract", "half", encoding, seed=1, time_chunk=5)
    cpu = Engine(case.net, opt).run_batch(case.x, case.labels)
    on_cuda = case.net.to("cuda")  # a copy: the cached CPU case stays as it is
    cuda = Engine(on_cuda, opt).run_batch(case.x.cuda(), case.labels.cuda())
    assert cuda.spikes.device.type == "cuda"
    if net_name == "linear":  # matmuls only: bit-exact on both devices
        _assert_same(cuda, cpu, "cuda vs cpu")
    else:  # cuDNN may pick a Winograd / FFT convolution, not exact even on the grid
        assert (cuda.spikes.cpu() - cpu.spikes).abs().sum() <= 1e-3 * cpu.spikes.sum()
        assert (cuda.correct.cpu() - cpu.correct).abs().max() <= 1


@needs_cuda
def test_cuda_one_neuron_exact() -> None:
    net = _one_neuron_net().to("cuda")
    for reset, v0 in SPIKE_STEPS:
        counts = Engine(net, SimOptions(T, reset=reset, v0=v0)).run_batch(
            torch.full((1, 1, 1, 1), 0.375, device="cuda"), torch.tensor([0], device="cuda"))
        assert [t for t in range(T) if counts.spikes[0, t] > 0] == SPIKE_STEPS[reset, v0]


@pytest.mark.parametrize(("batch", "time", "chunk"), [(8, 32, 4), (1, 8, 8), (31, 64, 2),
                                                       (32, 64, 1), (256, 64, 1)])
def test_cpu_chunks_give_each_conv_call_32_images(batch: int, time: int, chunk: int) -> None:
    """Small CPU batches run several steps per conv call (measured: half the time at batch 8);
    from batch 32 up, one step, never more than T."""
    net = SimpleNamespace(layers=[])  # the CPU rule reads only batch and T
    assert choose_chunk(net, batch, time, torch.device("cpu")) == chunk  # type: ignore[arg-type]
