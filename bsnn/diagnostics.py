"""How closely each spiking layer follows its ANN layer: the SNN Toolbox's core diagnostic.

Per layer, over every (image, neuron) pair evaluated: x is the ANN's activation divided by the
layer's lambda (so 1 is the threshold and above 1 is clipped by the percentile), y the SNN's
firing rate (spikes / T). The run keeps only running sums (n, sums of x, y, x^2, y^2, xy, the
count of x > 1) and a fixed 2-D histogram of (x, y) for the scatter plot, so a run of any
length keeps no per-image data.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # tensor methods only: summaries read this module without torch
    import torch

SUMS = ("pairs", "sum_x", "sum_y", "sum_xx", "sum_yy", "sum_xy", "clipped")
X_MAX = 2.0  # the histogram's x axis: 0 .. 2 lambda (larger x land in the last column)
BINS = 40  # per axis


def normalized(act: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """The ANN activation over lambda, lambda per layer (scalar) or per channel (dim 1)."""
    lam = lam.to(act.dtype)
    if lam.numel() > 1:
        lam = lam.view(1, -1, *([1] * (act.dim() - 2)))
    return act / lam


def batch_sums(act: torch.Tensor, counts: torch.Tensor, lam: torch.Tensor,
               steps: int) -> torch.Tensor:
    """One batch's running sums (in SUMS order), float64 on the tensors' device.

    Products are taken in the activations' float32 (one rounding each, relative 6e-8; counts
    squared are exact) and summed in float64: with float64 copies of every map, the sums and
    histograms of a vgg15ab batch of 32 took 0.22 s instead of 0.11 s (a tenth of its int8
    simulation)."""
    import torch  # here: summaries read this module without torch

    x = normalized(act, lam).flatten()
    y = counts.flatten().to(x.dtype)
    f64 = torch.float64
    return torch.stack([torch.tensor(x.numel(), dtype=f64, device=x.device),
                        x.sum(dtype=f64), y.sum(dtype=f64) / steps, (x * x).sum(dtype=f64),
                        (y * y).sum(dtype=f64) / steps**2, (x * y).sum(dtype=f64) / steps,
                        (x > 1).sum(dtype=f64)])  # on the device: no host synchronisation


def batch_histogram(act: torch.Tensor, counts: torch.Tensor, lam: torch.Tensor,
                    steps: int) -> torch.Tensor:
    """Counts of (x, y) pairs in a BINS x BINS grid: rows are y (rate 0 .. 1), columns x.

    A count's row is floor(count * BINS / steps) exactly: the product is an exact integer in
    float32 and one division cannot round it across the next integer. In place only on new
    tensors: float32 counts are the engine's own totals."""
    col = normalized(act, lam).flatten().mul_(BINS / X_MAX).clamp_(0, BINS - 1).long()
    row = (counts.flatten().float() * BINS).div_(steps).clamp_(0, BINS - 1).long()
    return row.mul_(BINS).add_(col).bincount(minlength=BINS * BINS).view(BINS, BINS).double()


def agreement(sums: list[float]) -> dict[str, Any]:
    """Pearson's r of x and y and the share of clipped activations, from SUMS; r is None when
    either side is constant (a silent layer, say), where a correlation means nothing."""
    n, sx, sy, sxx, syy, sxy, clipped = sums
    if n <= 0:
        return {"correlation": None, "clipped_share": None, "pairs": 0}
    var_x, var_y = n * sxx - sx * sx, n * syy - sy * sy
    constant = var_x <= 1e-12 * n * sxx or var_y <= 1e-12 * n * syy  # up to rounding
    r = None if constant else max(-1.0, min(1.0, (n * sxy - sx * sy) / math.sqrt(var_x * var_y)))
    return {"correlation": r, "clipped_share": clipped / n, "pairs": int(n)}


def add_agreement(rows: list[dict[str, Any]], sums: dict[str, list[float]]) -> None:
    """Each spiking layer's summary row gets its correlation and clipped share (None where
    nothing was measured: the bindsnet backend keeps no per-neuron counts)."""
    for row in rows:
        measured = sums.get(row["name"])
        result = agreement(measured) if measured else {"correlation": None,
                                                        "clipped_share": None, "pairs": 0}
        row.update(correlation=result["correlation"], clipped_share=result["clipped_share"])


def agreement_figure(histograms: dict[str, list[float]], title: str) -> Any:
    """One panel per spiking layer: the (activation / lambda, rate) histogram on a log colour
    scale, with the ideal IF neuron's response (rate = min(x, 1)) drawn over it."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.colors import LogNorm

    names = list(histograms)
    cols = min(4, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.8 * rows), dpi=100, squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        counts = [histograms[name][r * BINS:(r + 1) * BINS] for r in range(BINS)]
        if any(any(row) for row in counts):
            ax.imshow(counts, origin="lower", extent=(0, X_MAX, 0, 1), aspect="auto",
                      cmap="viridis", norm=LogNorm())
        ax.plot([0, 1, X_MAX], [0, 1, 1], color="white", lw=0.8, ls="--")
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("ANN activation / lambda", fontsize=7)
        ax.set_ylabel("SNN rate", fontsize=7)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
