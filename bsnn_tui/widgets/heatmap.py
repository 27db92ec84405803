"""Firing rate per layer and time step: shows how long each layer takes to settle, which a
single average hides. Columns are binned to the panel's width, so T may exceed it."""

from __future__ import annotations

from itertools import pairwise

from rich.color import Color
from rich.console import RenderableType
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.widget import Widget

from bsnn.summary import Summary

# Dark to bright; rich downgrades these to the nearest of 256 (or 16) colours as the terminal needs.
RAMP = ["#1d2b53", "#2e4a8a", "#1f7a8c", "#2a9d8f", "#8ab17d", "#e9c46a", "#f4a261", "#e76f51"]
SHADES = " ░▒▓█"


def bins(steps: int, width: int) -> list[tuple[int, int]]:
    """Split steps 0..steps-1 into at most `width` contiguous [start, end) bins."""
    n = max(1, min(steps, width))
    edges = [round(i * steps / n) for i in range(n + 1)]
    return [(a, b) for a, b in pairwise(edges) if b > a]


_STYLES = [Style(color=Color.parse(c), bgcolor=Color.parse(RAMP[0])) for c in RAMP]


def cell(level: float) -> tuple[str, Style]:
    """One cell for a level in 0..1: colour and shade both carry it, so it reads without colour."""
    style = _STYLES[min(len(RAMP) - 1, int(level * len(RAMP)))]
    return SHADES[min(len(SHADES) - 1, int(level * len(SHADES)))], style


class RateHeatmap(Widget):
    """Layers down (one row per layer, as in the thresholds table), time steps across, one colour
    scale for all layers: 0 .. the highest rate at any step."""

    DEFAULT_CSS = "RateHeatmap { height: auto; min-width: 12; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows: list[list[float] | None] = []
        self._lines: list[Text] = []  # what is on screen, at the width it was made for
        self._width = -1

    def show(self, summary: Summary) -> None:
        """Repaint only when a cell, the scale or the layers changed: the rates of a long run
        move less each batch than one shade can show."""
        rows = [layer.firing_rate_per_step for layer in summary.layers]
        resized = len(rows) != len(self._rows)
        self._rows = rows
        if not self.size.width:  # left out on a narrow screen: drawn afresh when shown
            self._width = -1
            if resized:
                self.refresh(layout=True)
            return
        lines = heatmap_lines(rows, self.size.width)
        if resized or lines != self._lines:
            self._lines, self._width = lines, self.size.width
            self.refresh(layout=resized)

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._rows) + 2  # a header and a footer line, as the tables beside it

    def render(self) -> RenderableType:
        if self.size.width != self._width:
            self._lines, self._width = heatmap_lines(self._rows, self.size.width), self.size.width
        return Text("\n").join(self._lines)


def heatmap_lines(rows: list[list[float] | None], width: int) -> list[Text]:
    """One line per row of the tables beside it; every line cropped, never wrapped, so the
    rows stay aligned with theirs."""
    rated = [r for r in rows if r]
    steps = max((len(r) for r in rated), default=0)
    top = max((max(r) for r in rated), default=0.0)
    spans = bins(steps, width) if steps else []
    lines = [Text(f"rate at t=1…{steps}" if steps else "rate per step", style="bold")]
    for per_step in rows:
        line = Text()
        if per_step and top > 0:
            for a, b in spans:
                line.append(*cell(sum(per_step[a:b]) / (b - a) / top))
        lines.append(line)
    legend = Text("after the first batch", style="dim")
    if rated:
        legend = Text("0 ", style="dim")
        for i in range(len(RAMP)):
            legend.append(*cell(i / (len(RAMP) - 1)))
        legend.append(f" {top:.3f}", style="dim")
    lines.append(legend)
    for line in lines:
        line.truncate(width)
    return lines
