"""Per-layer firing rates as bars: which layer fires too much or too little, next to the rate its
ANN activation predicts. Rows line up with the thresholds table and the heatmap beside it."""

from __future__ import annotations

from typing import Any

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


class FiringRateBars(CellsTable):
    """Spikes per neuron per step, each layer's bar scaled to the busiest layer."""

    PADDING = (1, 0)
    BODY_STYLES = ("cyan",)

    def show(self, summary: dict[str, Any]) -> None:
        layers = summary["layers"]
        top = max((layer["firing_rate"] or 0.0 for layer in layers), default=0.0)
        rows = tuple((bar(r / top if r and top else 0.0), rate(r), rate(layer["ann_rate"]))
                     for layer in layers for r in (layer["firing_rate"],))
        self.paint((("mean rate", "SNN", "ANN"), *rows, (f"max {rate(top)}", "", "")))
