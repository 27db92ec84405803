"""Per-layer firing rates: the SNN's beside the rate its ANN activation predicts, and as bars
(which layer fires too much or too little). Rows line up with the thresholds table and the
heatmap beside them. The figures and the bars are two tables: a narrow screen leaves out the
bars, never a figure."""

from __future__ import annotations

from bsnn.summary import Summary
from bsnn_tui.widgets.thresholds import CellsTable

BAR_WIDTH = 10


def bar(fraction: float, width: int = BAR_WIDTH) -> str:
    """A bar of `width` cells filled to `fraction` (0..1), in eighths of a cell."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")
    return text.ljust(width)


def rate(x: float | None) -> str:
    """Three decimals; the dash before the first batch is as wide, so the table keeps its
    size (and the screen its layout) when the figures arrive."""
    return "—".rjust(5) if x is None else f"{x:.3f}"


class FiringRates(CellsTable):
    """Spikes per neuron per step, the SNN's and the one its ANN activation predicts."""

    PADDING = (1, 0)
    LEFT_COLUMNS = 0
    LEAST_WIDTHS = (5, 5)

    def show(self, summary: Summary) -> None:
        rows = tuple((rate(layer.firing_rate), rate(layer.ann_rate)) for layer in summary.layers)
        self.paint((("SNN", "ANN"), *rows, ("", "")))


class FiringRateBars(CellsTable):
    """The SNN's mean rate as a bar, each layer's scaled to the busiest layer."""

    PADDING = (1, 0)
    BODY_STYLES = ("cyan",)
    LEAST_WIDTHS = (BAR_WIDTH,)

    def show(self, summary: Summary) -> None:
        layers = summary.layers
        top = max((layer.firing_rate or 0.0 for layer in layers), default=0.0)
        rows = tuple((bar(layer.firing_rate / top if layer.firing_rate and top else 0.0),)
                     for layer in layers)
        self.paint((("mean rate",), *rows, (f"max {rate(top)}",)))
