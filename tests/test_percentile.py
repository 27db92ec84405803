"""StreamingPercentile == numpy.percentile(method="linear"), streamed in uneven batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bsnn.conversion import percentile
from bsnn.conversion.percentile import StreamingPercentile
from bsnn.errors import ConfigError, ConversionError

QS = [1e-9, 0.1, 50, 99.7, 99.99, 100]  # (0, 100]: 0 itself is refused

pytestmark = pytest.mark.usefixtures("one_thread")


def _stream(q: float, batches: list[torch.Tensor], per_channel: bool = False,
            max_passes: int = 8) -> tuple[torch.Tensor, int]:
    """Run passes over the same batches until done; (result, passes)."""
    est = StreamingPercentile(q, per_channel)
    passes = 0
    while not est.done:
        assert passes < max_passes, "did not converge"
        for b in batches:
            est.update(b)
        est.end_pass()
        passes += 1
    assert est.result is not None
    return est.result, passes


def _numpy(q: float, data: torch.Tensor, per_channel: bool) -> np.ndarray:
    """The answer, from numpy in float64 (the values are float32, exactly representable),
    rounded to float32 as StreamingPercentile returns it."""
    a = data.double().numpy()
    if per_channel:
        a = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)
        return np.percentile(a, q, axis=1, method="linear").astype(np.float32)
    return np.atleast_1d(np.percentile(a.reshape(-1), q, method="linear")).astype(np.float32)


def _uneven(data: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    out, i = [], 0
    for s in sizes:
        out.append(data[i:i + s])
        i += s
    assert i == len(data)
    return out


def _activations(gen: torch.Generator, shape: tuple[int, ...]) -> torch.Tensor:
    """ReLU-like: more than half zeros, the rest on a coarse grid (many ties), one channel
    silent and one constant."""
    a = torch.relu(torch.randn(shape, generator=gen) - 0.2)
    a = torch.round(a * 8) / 8
    a[:, 0] = 0.0
    a[:, 1] = 0.75
    if a.shape[1] > 3:
        a[:, 3] *= 100  # channels on different scales
    return a


@pytest.mark.parametrize("per_channel", [False, True], ids=["layer", "channel"])
@pytest.mark.parametrize("q", QS)
@pytest.mark.parametrize("shape", [(40, 5, 3, 3), (40, 6)], ids=["conv", "linear"])
def test_matches_numpy_with_ties_and_zeros(q: float, per_channel: bool,
                                           shape: tuple[int, ...]) -> None:
    gen = torch.Generator().manual_seed(int(q * 100) + 7 * per_channel)
    data = _activations(gen, shape)
    got, _ = _stream(q, _uneven(data, [1, 13, 2, 24]), per_channel)
    want = _numpy(q, data, per_channel)
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("per_channel", [False, True], ids=["layer", "channel"])
@pytest.mark.parametrize("q", QS)
def test_matches_numpy_on_continuous_values(q: float, per_channel: bool) -> None:
    """Distinct values (no ties), negative ones too: interpolation between neighbours."""
    gen = torch.Generator().manual_seed(3)
    data = torch.randn(33, 4, 5, 5, generator=gen) * torch.tensor([1.0, 1e-3, 1e3, 7.0]).view(
        1, 4, 1, 1)
    got, _ = _stream(q, _uneven(data, [10, 1, 22]), per_channel)
    np.testing.assert_array_equal(got.numpy(), _numpy(q, data, per_channel))


@pytest.mark.parametrize("q", QS)
def test_single_value(q: float) -> None:
    got, _ = _stream(q, [torch.tensor([[2.5]])])
    assert got.tolist() == [2.5]


@pytest.mark.parametrize("value", [0.0, 0.3, -2.5, 1e-30])
@pytest.mark.parametrize("q", [1e-9, 50, 99.7, 100])
@pytest.mark.parametrize("per_channel", [False, True], ids=["layer", "channel"])
def test_all_values_equal(value: float, q: float, per_channel: bool) -> None:
    data = torch.full((10, 3, 4, 4), value)
    got, _ = _stream(q, _uneven(data, [3, 7]), per_channel)
    assert got.tolist() == [np.float32(value)] * (3 if per_channel else 1)


def test_passes_are_few() -> None:
    gen = torch.Generator().manual_seed(0)
    data = _activations(gen, (64, 8, 6, 6))
    _, passes = _stream(99.7, _uneven(data, [30, 34]), per_channel=True)
    assert passes <= 4


def test_no_activations_is_an_error() -> None:
    est = StreamingPercentile(99.7)
    with pytest.raises(ConfigError, match="no activations"):
        est.end_pass()
    est.update(torch.empty(0, 3))  # an empty batch is no activation either
    with pytest.raises(ConfigError, match="no activations"):
        est.end_pass()


@pytest.mark.parametrize("q", [0, -1, 100.01, 150, float("nan"), float("inf"), -float("inf")])
def test_percentile_outside_0_100_is_refused(q: float) -> None:
    with pytest.raises(ConfigError, match=r"outside \(0, 100\]") as info:
        StreamingPercentile(q)
    assert "99.7" in info.value.fix


@pytest.mark.parametrize("q", ["99.7", None, True, torch.tensor(99.7)])
def test_percentile_that_is_not_a_number_is_refused(q: object) -> None:
    with pytest.raises(ConfigError, match="not a number"):
        StreamingPercentile(q)  # type: ignore[arg-type]


def test_per_channel_must_be_a_bool() -> None:
    """A truthy string such as "layer" would otherwise silently mean per channel."""
    with pytest.raises(ConfigError, match="per_channel 'layer'"):
        StreamingPercentile(99.7, "layer")  # type: ignore[arg-type]


@pytest.mark.parametrize("per_channel", [False, True], ids=["layer", "channel"])
def test_activations_of_another_shape_are_refused(per_channel: bool) -> None:
    est = StreamingPercentile(50, per_channel)
    with pytest.raises(ConfigError, match="no channel axis"):
        est.update(torch.rand(5))
    est.update(torch.rand(4, 3, 2, 2))
    for other in (torch.rand(4, 1, 2, 2), torch.rand(4, 3, 2), torch.rand(4, 12)):
        with pytest.raises(ConfigError, match=r"follow \(N, 3, 2, 2\)"):
            est.update(other)
    est.update(torch.rand(1, 3, 2, 2))  # another batch size is fine
    est.end_pass()
    with pytest.raises(ConfigError, match="follow"):  # in later passes too
        est.update(torch.rand(4, 1, 2, 2))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nan_or_infinite_activations_are_refused(bad: float) -> None:
    data = torch.rand(10, 2, 3)
    data[3, 1, 2] = bad
    est = StreamingPercentile(99.7, per_channel=True)
    est.update(data)
    with pytest.raises(ConversionError, match="NaN or infinite"):
        est.end_pass()


@pytest.mark.parametrize("q", [50, 99.7])
def test_larger_than_torch_quantile_limit(q: float) -> None:
    """More than 2^24 values (torch.quantile refuses them), with zeros and ties (a 1/1024 grid)."""
    gen = torch.Generator().manual_seed(11)
    n, c, h, w = 65, 1, 512, 512
    assert n * c * h * w > 2**24
    data = torch.relu(torch.randn(n, c, h, w, generator=gen) + 0.5)
    data = torch.round(data * 1024) / 1024
    got, _ = _stream(q, _uneven(data, [40, 25]))
    want = np.percentile(data.reshape(-1).numpy().astype(np.float64), q, method="linear")
    assert got.tolist() == [np.float32(want)]


@pytest.mark.parametrize("value", [0.0, 0.75])
def test_large_block_of_equal_values_converges_in_few_passes(
        value: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """The median of a layer that is 60 % silent is 0; in a real set of images the zeros
    number far more than COLLECT_CAP (4 M). Each pass is a forward over all those images,
    so the pass count matters. COLLECT_CAP is lowered so that small data reproduce it."""
    monkeypatch.setattr(percentile, "COLLECT_CAP", 100)
    gen = torch.Generator().manual_seed(0)
    data = torch.full((1000, 1), value)
    data[600:] = 1 + torch.rand(400, 1, generator=gen)
    got, passes = _stream(50, [data], max_passes=200)
    assert got.tolist() == [value]
    assert passes <= 5, f"{passes} passes"
