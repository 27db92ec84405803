"""Thresholds per layer (a range when they are per channel) and synaptic operations per image:
what the conversion chose and what it costs. Its rows name the layers for the panels beside it."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from textual.widgets import Static


def threshold_text(layer: dict[str, Any]) -> str:
    lo, hi = layer.get("threshold_min"), layer.get("threshold_max")
    if lo is not None and hi is not None and f"{lo:.3g}" != f"{hi:.3g}":
        return f"{lo:.3g}–{hi:.3g}"
    th = layer.get("threshold")
    return "output" if th is None else f"{th:.4g}"


def count(x: float | None) -> str:
    """Large counts stay readable in a narrow column: 1.2M, 35.0k."""
    if x is None:
        return "—"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= limit:
            return f"{x / limit:.1f}{suffix}"
    return f"{x:.0f}"


class ThresholdsTable(Static):
    def show(self, summary: dict[str, Any]) -> None:
        table = Table(box=None, padding=(0, 1, 0, 0), show_edge=False, show_footer=True)
        table.add_column("layer", "total", no_wrap=True)
        table.add_column("neurons", justify="right", no_wrap=True)
        table.add_column("θ", justify="right", no_wrap=True)
        table.add_column("synops/img", count(summary["synops_per_image"]), justify="right",
                         no_wrap=True)
        for layer in summary["layers"]:
            binary = " ±" if layer.get("binary") else ""
            table.add_row(layer["name"] + binary, count(layer["neurons"]),
                          threshold_text(layer), count(layer["synops_per_image"]))
        self.update(table)
