"""The ANN-vs-SNN agreement: running sums give the correlation of all pairs at once."""

import math

import numpy as np
import pytest
import torch

from bsnn.diagnostics import BINS, SUMS, agreement, batch_histogram, batch_sums, normalized


def _batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(3):
        act = torch.rand(4, 3, 5, 5, generator=g) * 3
        counts = torch.randint(0, 33, (4, 3, 5, 5), generator=g).float()
        out.append((act, counts))
    return out


def test_running_sums_equal_the_correlation_of_every_pair() -> None:
    lam = torch.tensor([1.5, 2.0, 0.5])
    total = sum(batch_sums(a, c, lam, 32) for a, c in _batches())
    result = agreement(total.tolist())
    xs = np.concatenate([normalized(a, lam).flatten().numpy() for a, _ in _batches()])
    ys = np.concatenate([(c / 32).flatten().numpy() for _, c in _batches()])
    assert result["pairs"] == xs.size == 900
    # float32 products summed in float64 (batch_sums): r to about 1e-8, shown to 3 digits
    assert result["correlation"] == pytest.approx(np.corrcoef(xs, ys)[0, 1], abs=1e-7)
    assert result["clipped_share"] == pytest.approx((xs > 1).mean())
    assert len(total) == len(SUMS)


def test_a_rate_that_follows_the_activation_correlates_fully() -> None:
    act = torch.rand(8, 100) * 2

    def if_counts(lam: float) -> torch.Tensor:  # an ideal IF neuron over 64 steps
        return (act / lam).clamp(max=1).mul(64).floor()

    unclipped = agreement(batch_sums(act, if_counts(2.0), torch.tensor(2.0), 64).tolist())
    assert unclipped["correlation"] > 0.999 and unclipped["clipped_share"] == 0
    clipped = agreement(batch_sums(act, if_counts(1.0), torch.tensor(1.0), 64).tolist())
    assert clipped["clipped_share"] == pytest.approx((act > 1).float().mean().item())
    assert clipped["correlation"] < unclipped["correlation"]


def test_a_silent_layer_has_no_correlation() -> None:
    act = torch.rand(4, 10)
    result = agreement(batch_sums(act, torch.zeros(4, 10), torch.tensor(1.0), 16).tolist())
    assert result["correlation"] is None and result["pairs"] == 40
    assert agreement([0.0] * len(SUMS)) == {"correlation": None, "clipped_share": None,
                                            "pairs": 0}


def test_histogram_puts_each_pair_in_its_cell() -> None:
    act = torch.tensor([[0.0, 0.99, 5.0, 1.0]])  # x = act / 1; 5.0 lands in the last column
    counts = torch.tensor([[0.0, 16.0, 16.0, 8.0]])  # y = 0, 1, 1, 0.5
    hist = batch_histogram(act, counts, torch.tensor(1.0), 16)
    assert hist.shape == (BINS, BINS) and hist.sum() == 4
    assert hist[0, 0] == 1 and hist[BINS - 1, BINS - 1] == 1
    assert hist[BINS - 1, math.floor(0.99 / 2 * BINS)] == 1
    assert hist[BINS // 2, BINS // 2] == 1


def test_the_diagnostics_leave_the_callers_tensors_as_they_were() -> None:
    act, counts = torch.rand(4, 3, 5, 5) * 3, torch.randint(0, 17, (4, 3, 5, 5)).float()
    before = (act.clone(), counts.clone())
    batch_sums(act, counts, torch.tensor(1.5), 16)
    batch_histogram(act, counts, torch.tensor(1.5), 16)
    assert torch.equal(act, before[0]) and torch.equal(counts, before[1])
