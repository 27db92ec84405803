"""Per-layer firing rates as bars: which layer fires too much or too little, next to the rate its
ANN activation predicts. Rows line up with the thresholds table and the heatmap beside it."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

BAR_WIDTH = 10


def bar(fraction: float, width: int = BAR_WIDTH) -> Text:
    """A bar of `width` cells filled to `fraction` (0..1), in eighths of a cell."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")
    return Text(text.ljust(width), style="cyan")


def rate(x: float | None) -> str:
    return "—" if x is None else f"{x:.3f}"


class FiringRateBars(Static):
    """Spikes per neuron per step, each layer's bar scaled to the busiest layer."""

    def show(self, summary: dict[str, Any]) -> None:
        layers = summary["layers"]
        top = max((layer["firing_rate"] or 0.0 for layer in layers), default=0.0)
        table = Table(box=None, padding=(0, 0, 0, 1), show_edge=False, show_footer=True)
        table.add_column("mean rate", f"max {rate(top)}", no_wrap=True, width=BAR_WIDTH)
        table.add_column("SNN", justify="right", no_wrap=True)
        table.add_column("ANN", justify="right", no_wrap=True)
        for layer in layers:
            r = layer["firing_rate"]
            table.add_row(bar(r / top if r and top else 0.0), rate(r), rate(layer["ann_rate"]))
        self.update(table)
