"""Per-layer firing rates as bars: which layer fires too much or too little, next to the rate its
ANN activation predicts. Rows line up with the thresholds table and the heatmap beside it."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

from bsnn_tui.widgets.thresholds import CellsTable

BAR_WIDTH = 10


def bar(fraction: float, width: int = BAR_WIDTH) -> Text:
    """A bar of `width` cells filled to `fraction` (0..1), in eighths of a cell."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")
    return Text(text.ljust(width), style="cyan")


def rate(x: float | None) -> str:
    """Three decimals; the dash before the first batch is as wide, so the table keeps its
    size (and the screen its layout) when the figures arrive."""
    return "—".rjust(5) if x is None else f"{x:.3f}"


class FiringRateBars(CellsTable):
    """Spikes per neuron per step, each layer's bar scaled to the busiest layer."""

    def show(self, summary: dict[str, Any]) -> None:
        layers = summary["layers"]
        top = max((layer["firing_rate"] or 0.0 for layer in layers), default=0.0)
        rows = tuple((bar(r / top if r and top else 0.0).plain, rate(r), rate(layer["ann_rate"]))
                     for layer in layers for r in (layer["firing_rate"],))
        footer = (f"max {rate(top)}", "", "")

        def table() -> Table:
            t = Table(box=None, padding=(0, 0, 0, 1), show_edge=False, show_footer=True)
            t.add_column("mean rate", footer[0], no_wrap=True, width=BAR_WIDTH)
            t.add_column("SNN", justify="right", no_wrap=True)
            t.add_column("ANN", justify="right", no_wrap=True)
            for bars, snn, ann in rows:
                t.add_row(Text(bars, style="cyan"), snn, ann)
            return t

        self.paint((("mean rate", "SNN", "ANN"), *rows, footer), table)
