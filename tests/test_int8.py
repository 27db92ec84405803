"""The exact int8 path (bsnn.snn.int8): +-1 layers on 0/1 spikes give float32's sums bit for bit,
so the engine's counts with int8 are float32's; `auto` takes it only where it can, an explicit
`int8` is refused with a reason where it cannot; and the flush-denormals helper.

The kernel tests skip (saying why) on a CPU without int8 dot-product units or a torch without
oneDNN's int8 ops; the choice, fallback and refusal tests run everywhere (the machine's answer
is patched where they need one).
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from torch import nn

from bsnn.conversion import convert
from bsnn.errors import ConfigError
from bsnn.models import BinaryConv2d, BinaryLinear, build_model
from bsnn.snn import int8
from bsnn.snn.denormals import flush_denormals, flushes_here
from bsnn.snn.engine import BatchCounts, Engine
from bsnn.snn.network import SpikingNetwork
from bsnn.snn.options import SimOptions
from bsnn.snn.precision import plan_currents

pytestmark = pytest.mark.usefixtures("one_thread")
CPU = torch.device("cpu")
_REFUSAL = int8.int8_unavailable(CPU)
needs_int8 = pytest.mark.skipif(_REFUSAL is not None,
                                reason=f"no exact int8 here: {_REFUSAL and _REFUSAL.reason}")


def _signs(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.where(torch.rand(shape, generator=gen) < 0.5, -1.0, 1.0)


# --------------------------------------------------------------------------------------------
# the kernels


@needs_int8
@pytest.mark.parametrize(("channels", "out", "kernel", "stride", "padding", "size"), [
    (3, 5, 3, 2, 1, (7, 9)), (64, 16, 3, 1, 1, (5, 5)), (512, 8, 3, 1, 1, (3, 4)),  # 4608
    (600, 7, 3, 1, 0, (5, 4)), (13, 11, 1, 1, 0, (6, 5)), (17, 9, 5, 3, 2, (11, 8)),
    (5000, 3, 1, 1, 0, (2, 3))])
def test_int8_conv_equals_float32(channels: int, out: int, kernel: int, stride: int,
                                  padding: int, size: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(channels * 31 + kernel)
    conv = nn.Conv2d(channels, out, kernel, stride=stride, padding=padding, bias=False)
    conv.weight.data = _signs(tuple(conv.weight.shape), gen)
    op = int8.Int8Conv(conv)
    for density in (0.1, 0.5, 1.0):
        x = (torch.rand(3, channels, *size, generator=gen) < density).float()
        got = op(x)
        assert got.dtype == torch.float32
        assert torch.equal(got, conv(x)), density
        assert torch.equal(op(x.to(torch.int8).contiguous(memory_format=torch.channels_last)),
                           got)  # the engine's spikes: int8, channels-last


@needs_int8
@pytest.mark.parametrize("positions", [0, 10**6])  # every map by matmul; every one by conv
def test_int8_conv_routes_agree(positions: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small maps take im2col and a matmul (on AMX), larger ones oneDNN's conv: each alone is
    exact, dilation and uneven strides included."""
    monkeypatch.setattr(int8, "matmul_positions", lambda: positions)
    gen = torch.Generator().manual_seed(5)
    for kernel, stride, padding, dilation, size in [(3, 1, 2, 2, (9, 8)), (3, (2, 1), 1, 1,
                                                     (6, 7)), ((1, 3), 1, (0, 1), 1, (4, 4))]:
        conv = nn.Conv2d(300, 6, kernel, stride, padding, dilation, bias=False)
        conv.weight.data = _signs(tuple(conv.weight.shape), gen)
        x = (torch.rand(2, 300, *size, generator=gen) < 0.4).float()
        assert torch.equal(int8.Int8Conv(conv)(x), conv(x)), (kernel, stride, padding)


@pytest.mark.parametrize(("unit", "cap", "positions"), [
    ("amx_int8", "", int8.GEMM_POSITIONS), ("amx_int8", "avx512_core_amx", int8.GEMM_POSITIONS),
    ("amx_int8", "AVX512_CORE_VNNI", 0), ("avx512_vnni", "", 0), ("avx_vnni", "", 0)])
def test_small_maps_take_the_matmul_only_where_onednn_may_use_amx(
        unit: str, cap: str, positions: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """On AMX the matmul is faster for small maps, with VNNI alone the conv (RESULTS.md); a
    oneDNN cap that names no AMX leaves the CPU's AMX unused (cpu_int8_unit)."""
    monkeypatch.setattr(int8, "_cpuinfo_flags", lambda: {unit})
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: unit == "amx_int8",
                        raising=False)
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: False, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    int8.cpu_int8_unit.cache_clear()
    try:
        assert int8.matmul_positions() == positions
    finally:
        int8.cpu_int8_unit.cache_clear()


@needs_int8
@pytest.mark.parametrize(("fan_in", "out"), [(25088, 16), (4099, 7), (40, 3)])
def test_int8_linear_equals_float32(fan_in: int, out: int) -> None:
    gen = torch.Generator().manual_seed(fan_in)
    linear = nn.Linear(fan_in, out, bias=False)
    linear.weight.data = _signs(tuple(linear.weight.shape), gen)
    op = int8.Int8Linear(linear)
    x = (torch.rand(5, fan_in, generator=gen) < 0.3).float()
    assert torch.equal(op(x), linear(x))
    assert torch.equal(op(torch.ones(2, 3, fan_in)), linear(torch.ones(2, 3, fan_in)))


# --------------------------------------------------------------------------------------------
# the engine: int8 counts are float32's


def _odd_chain() -> nn.Module:
    """Odd sizes, stride, padding, a fan-in above 2**11 (520 x 3 x 3 = 4680), an avg-pool whose
    divisor (9) is not a power of two, and a binary linear."""
    return nn.Sequential(
        nn.Conv2d(3, 520, 3, padding=1), nn.ReLU(),
        BinaryConv2d(520, 20, 3, stride=2, padding=1), nn.ReLU(),  # 9x7 -> 5x4
        BinaryConv2d(20, 12, 3, padding=2), nn.AvgPool2d(3, stride=1), nn.ReLU(),  # 7x6 -> 5x4
        nn.Flatten(), BinaryLinear(240, 30), nn.ReLU(), nn.Linear(30, 5))


def _convert(model: nn.Module, shape: tuple[int, ...], binary_weights: str = "sign",
             granularity: str = "layer") -> tuple[SpikingNetwork, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = model.eval()
    images = torch.rand(24, *shape)
    net = convert(model, lambda: [images[:12], images[12:]], 99.0, granularity,
                  binary_weights).network
    return net, torch.rand(4, *shape), torch.arange(4) % 5


@functools.cache
def _net(name: str) -> tuple[SpikingNetwork, torch.Tensor, torch.Tensor]:
    if name == "odd":
        return _convert(_odd_chain(), (3, 9, 7))
    torch.manual_seed(0)
    vgg = build_model("vgg6ab", 10, (1, 8, 8), binary=True, width=8.0)  # 256, 512 channels
    return _convert(vgg, (1, 8, 8))


def _same(a: BatchCounts, b: BatchCounts) -> None:
    assert a.spikes.sum() > 0, "degenerate: nothing spikes"
    assert torch.equal(a.spikes, b.spikes)
    assert torch.equal(a.synops, b.synops)
    assert torch.equal(a.correct, b.correct)
    assert (a.totals is None) == (b.totals is None)
    for x, y in zip(a.totals or [], b.totals or [], strict=True):
        assert torch.equal(x, y)


SIMS = [SimOptions(12), SimOptions(12, time_chunk=1), SimOptions(12, v0="half", time_chunk=2),
        SimOptions(12, "delayed", "zero", "half", "poisson", seed=3),
        SimOptions(12, reset="zero", time_chunk=5), SimOptions(12, "delayed", time_chunk=4),
        SimOptions(12, encoding="poisson", readout_delay=2, time_chunk=12)]


@needs_int8
@pytest.mark.parametrize("name", ["odd", "vgg6ab-wide"])
@pytest.mark.parametrize("options", SIMS, ids=range(len(SIMS)))
def test_engine_int8_counts_equal_float32(name: str, options: SimOptions) -> None:
    net, x, y = _net(name)
    runs = {}
    for precision in ("fp32", "int8"):
        engine = Engine(net, dataclasses.replace(options, precision=precision))
        runs[precision] = engine.run_batch(x, y, batch_index=1, keep_totals=True)
    assert engine.arithmetic() == ["fp32"] + ["int8-exact"] * (len(net.layers) - 2) + ["fp32"]
    _same(runs["fp32"], runs["int8"])


@needs_int8
@pytest.mark.parametrize("chunk", [None, 300])  # uint8 counters emptied every 255 steps; none
def test_int8_totals_past_255_steps(chunk: int | None) -> None:
    net, x, y = _net("odd")
    a, b = (Engine(net, SimOptions(300, precision=p, time_chunk=chunk)).run_batch(
        x, y, keep_totals=True) for p in ("fp32", "int8"))
    _same(a, b)
    assert max(float(t.max()) for t in b.totals or []) > 255  # a counter went past a byte


@needs_int8
def test_auto_takes_int8_where_it_can() -> None:
    net, x, y = _net("odd")
    engine = Engine(net, SimOptions(12))
    assert engine.arithmetic() == engine.arithmetic(CPU) == [
        "fp32", "int8-exact", "int8-exact", "int8-exact", "fp32"]
    _same(Engine(net, SimOptions(12, precision="fp32")).run_batch(x, y), engine.run_batch(x, y))


# --------------------------------------------------------------------------------------------
# fallback and refusals: everywhere


@pytest.fixture
def no_int8_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(int8, "cpu_int8_unit", lambda: None)


@pytest.fixture
def int8_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """A machine that would take int8 (only for nets where no int8 kernel gets built)."""
    monkeypatch.setattr(int8, "int8_unavailable", lambda device: None)
    monkeypatch.setattr("bsnn.snn.precision.int8_unavailable", lambda device: None)


def test_auto_falls_back_to_float32_without_int8_units(no_int8_unit: None) -> None:
    net, x, y = _net("odd")
    engine = Engine(net, SimOptions(12))
    assert engine.arithmetic() == ["fp32"] * len(net.layers)
    _same(Engine(net, SimOptions(12, precision="fp32")).run_batch(x, y), engine.run_batch(x, y))
    with pytest.raises(ConfigError, match="no int8 dot-product unit") as info:
        Engine(net, SimOptions(12, precision="int8"))
    assert "--precision auto" in info.value.fix


def test_auto_falls_back_without_the_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(int8, "cpu_int8_unit", lambda: "avx512_vnni")
    monkeypatch.setattr(int8, "_op_problem", lambda: "this torch build has no oneDNN")
    net, _, _ = _net("odd")
    assert Engine(net, SimOptions(12)).arithmetic() == ["fp32"] * len(net.layers)
    with pytest.raises(ConfigError, match="no oneDNN"):
        Engine(net, SimOptions(12, precision="int8"))


def test_int8_is_cpu_only() -> None:
    """On CUDA auto keeps its float16; int8 is refused (decided before anything runs there)."""
    net, _, _ = _net("odd")
    cuda = torch.device("cuda")
    paths = plan_currents(net, "auto", cuda)
    assert [p.arithmetic for p in paths] == ["fp32", "fp16-exact", "fp16-exact",
                                             "fp16-exact", "fp32"]
    with pytest.raises(ConfigError, match="runs on cuda") as info:
        plan_currents(net, "int8", cuda)
    assert "float16" in info.value.fix


def test_int8_refused_for_alpha_weights(int8_machine: None) -> None:
    model = _odd_chain()
    net, _, _ = _convert(model, (3, 9, 7), binary_weights="alpha")
    assert [p.arithmetic for p in plan_currents(net, "auto", CPU)] == ["fp32"] * 5
    with pytest.raises(ConfigError, match=r"binary layer \S+ cannot take int8: its binary "
                                          r"weights are \+-alpha") as info:
        plan_currents(net, "int8", CPU)
    assert net.layers[1].name in info.value.message
    assert "--binary-weights sign" in info.value.fix


def test_int8_refused_for_per_channel_amplitudes(int8_machine: None) -> None:
    net, _, _ = _convert(_odd_chain(), (3, 9, 7), granularity="channel")
    with pytest.raises(ConfigError, match="per-channel amplitudes") as info:
        plan_currents(net, "int8", CPU)
    assert "--threshold-granularity layer" in info.value.fix


def test_int8_refused_for_a_pooling_before_the_weights(int8_machine: None) -> None:
    """ReLU then avg-pool (vgg15avg's order): the pooled spikes reach the +-1 conv."""
    chain = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                          BinaryConv2d(6, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 2 * 2, 4))
    net, _, _ = _convert(chain, (2, 4, 4))
    assert isinstance(net.layers[1].ops[0], nn.AvgPool2d)
    with pytest.raises(ConfigError, match="AvgPool2d comes before its weights"):
        plan_currents(net, "int8", CPU)


def test_int8_refused_where_no_layer_can(int8_machine: None) -> None:
    """A full-precision net: nothing to refuse layer by layer, but nothing takes int8."""
    torch.manual_seed(0)
    net, _, _ = _convert(build_model("vgg6ab", 10, (1, 8, 8)), (1, 8, 8))
    with pytest.raises(ConfigError, match="no layer of this network can take int8") as info:
        plan_currents(net, "int8", CPU)
    assert "analog image" in info.value.message and "full precision" in info.value.message
    assert "--binary-weights sign" in info.value.fix


def test_int8_is_a_known_precision() -> None:
    assert SimOptions(4, precision="int8").precision == "int8"


# --------------------------------------------------------------------------------------------
# denormals


def _tiny() -> torch.Tensor:
    """Float32 denormals, many enough to be split over every intra-op thread."""
    return torch.ones(1 << 18, dtype=torch.int32).view(torch.float32)


@pytest.fixture
def two_threads():  # type: ignore[no-untyped-def]
    """The workers are what torch.set_flush_denormal misses: have one."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="no flush-to-zero on this CPU")
@pytest.mark.parametrize("caller", [False, True])
def test_flush_denormals_restores_the_callers_setting(caller: bool, two_threads: None) -> None:
    torch.set_flush_denormal(caller)
    try:
        assert flushes_here() is caller
        with flush_denormals() as everywhere:
            assert flushes_here()
            doubled = (_tiny() * 2).view(torch.int32)
            assert not (doubled.any() if everywhere else doubled[:1].any())
        assert flushes_here() is caller
        if not caller:  # every thread computes denormals again
            assert (_tiny() * 2).view(torch.int32).all()
    finally:
        torch.set_flush_denormal(False)


def test_engine_runs_a_batch_with_denormals_flushed() -> None:
    seen: list[bool] = []
    net, x, y = _net("odd")
    engine = Engine(net, SimOptions(4, precision="fp32"))
    first = net.layers[0].ops[0]
    handle = first.register_forward_hook(lambda *_: seen.append(flushes_here()))
    try:
        engine.run_batch(x, y)
    finally:
        handle.remove()
    supported = torch.set_flush_denormal(False)
    assert seen and all(s == supported for s in seen)
    assert not flushes_here()


@pytest.mark.parametrize("channels_last", [False, True])
def test_big_maps_are_made_in_pieces_with_the_same_result(channels_last: bool) -> None:
    """The engine computes a current over big maps a few images at a time (memory); the
    result, its layout included, is the whole call's."""
    from bsnn.snn.engine import BIG_MAP_IMAGES, _currents

    torch.manual_seed(0)
    ops = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.AvgPool2d(2))
    x = (torch.rand(2 * BIG_MAP_IMAGES + 3, 3, 16, 16) < 0.5).float()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    calls: list[int] = []
    handle = ops.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    try:
        got = _currents(ops, x)
    finally:
        handle.remove()
    assert calls == [BIG_MAP_IMAGES, BIG_MAP_IMAGES, 3]
    assert torch.equal(got, ops(x))
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last


@needs_int8
def test_a_binary_model_runs_int8_by_default_with_float32_figures() -> None:
    """No flag: a binary checkpoint converts in sign mode, its +-1 layers run int8 (the run's
    simulate phase says so), and accuracy at every step, firing rates and synaptic operations
    are --precision fp32's."""
    import bsnn
    from bsnn.events import Phase

    snn = bsnn.convert("bundled:digits-binary", "digits", device="cpu", norm=64)
    said: list[str] = []
    auto = bsnn.simulate(snn, "digits", time=16, eval_size=96,
                         on_event=lambda e: said.append(e.message) if isinstance(e, Phase)
                         and e.name == "simulate" else None)
    fp32 = bsnn.simulate(snn, "digits", time=16, eval_size=96, precision="fp32")
    assert len(said) == 1 and "int8-exact" in said[0], said
    assert auto.accuracy_per_step == fp32.accuracy_per_step
    assert [(a.firing_rate, a.synops_per_image) for a in auto.layers] == [
        (b.firing_rate, b.synops_per_image) for b in fp32.layers]
    assert sum(a.binary is True for a in auto.layers) > 0
