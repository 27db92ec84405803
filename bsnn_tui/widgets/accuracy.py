"""Accuracy against time step: the curve the researcher watches climb, drawn in braille dots.

Drawn here rather than by a plotting library: plotext built the figure in Python and its ANSI
text was parsed again, 10-12 ms a redraw at 80x24, the dearest panel of a live run; this takes
2-3 ms, most of it Textual's work per line. The figure is built again only when its curves,
its size or its style change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from itertools import cycle, pairwise
from typing import Any

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from bsnn.summary import Summary
from bsnn_tui.widgets.braille import Canvas, Row

# Named colours render in 16- and 256-colour terminals alike.
CURVE_COLOURS = ("cyan", "dark_orange", "green", "magenta", "yellow", "blue", "red", "white")
ANN_COLOUR, WITHIN_COLOUR = "grey50", "green"
Y_TICKS = (0, 100, 50, 25, 75)  # per cent; where rows are few, the first ones win
LABEL_WIDTH = 3  # "100"


def percent(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage, or a dash when there is none yet."""
    return "—" if x is None else f"{100 * x:.{digits}f} %"


def step_ticks(last: int) -> list[int]:
    """Whole time steps for the x axis: 1, then multiples of a power of two (T is usually one),
    about four of them, and `last` where the last multiple leaves a gap."""
    step = 1
    while step * 4 < last - 1:
        step *= 2
    ticks = [1, *range(step, last + 1, step)] if step > 1 else list(range(1, last + 1))
    if last - ticks[-1] >= step / 2:
        ticks.append(last)
    return ticks


Curves = Sequence[tuple[str, Sequence[float]]]  # (label, accuracy at t = 1, 2, ...)
Place = Callable[[float, float], tuple[int, int]]  # (t, accuracy) -> the dot that shows it


def plot_lines(curves: Curves, steps: int, ann: float | None, within: int | None,
               size: tuple[int, int]) -> list[Row]:
    """The figure in `size` (width, height) cells: accuracy in % up, time step t across, the
    ANN's accuracy as a grey line, the first step within 1 point of it as a green one."""
    width, height = size
    named = height >= 8  # room for "time step t" under the axis
    canvas = Canvas(width - LABEL_WIDTH - 1, height - 2 - named)
    if canvas.width < 4 or canvas.height < 2:
        return [[("enlarge the terminal to see the plot", "dim")]]
    last = max([steps, 2, *(len(acc) for _, acc in curves)])
    xs, ys = canvas.dots

    def at(t: float, fraction: float) -> tuple[int, int]:
        return round((t - 1) * (xs - 1) / (last - 1)), round((1 - fraction) * (ys - 1))

    if ann is not None:
        canvas.line(at(1, ann), at(last, ann), ANN_COLOUR)
    if within is not None:
        canvas.line(at(within, 1), at(within, 0), WITHIN_COLOUR)
    colours = list(zip(curves, cycle(CURVE_COLOURS), strict=False))
    for (_, acc), colour in colours:
        points = [at(t, a) for t, a in enumerate(acc, 1)]
        for start, end in pairwise(points[:1] + points):  # a single point is a dot
            canvas.line(start, end, colour)
    if len(curves) > 1:
        legend = [(f"■ {label}", colour) for (label, _), colour in colours][:canvas.height]
        row, col = legend_corner(canvas, len(legend), max(len(text) for text, _ in legend))
        for i, (text, colour) in enumerate(legend):
            canvas.write(row + i, col, text, colour)
    return [*y_axis(canvas, at), *x_axis(step_ticks(last), at, canvas.width, width, named)]


def legend_corner(canvas: Canvas, rows: int, cols: int) -> tuple[int, int]:
    """The corner (row, column) where a legend of `rows` x `cols` cells hides the fewest drawn
    cells. Runs differ most in their first steps and converge near the top, so this is
    usually the bottom right; on a tie, the bottom right wins, then the top right."""
    cols = min(cols, canvas.width - 1)
    right, bottom = canvas.width - cols, canvas.height - rows
    corners = ((bottom, right), (0, right), (bottom, 1), (0, 1))

    def hidden(corner: tuple[int, int]) -> int:
        row, col = corner
        return sum(1 for r in range(row, row + rows) for c in range(col, col + cols)
                   if canvas.bits[r][c])

    return min(corners, key=hidden)


def y_axis(canvas: Canvas, at: Place) -> list[Row]:
    """The canvas's rows behind a labelled axis: a tick at 0, 25, 50, 75 and 100 % where the
    rows allow."""
    ticks: dict[int, int] = {}
    for value in Y_TICKS:
        ticks.setdefault(at(1, value / 100)[1] // 4, value)
    return [[(f"{ticks[r]:>{LABEL_WIDTH}}┤" if r in ticks else " " * LABEL_WIDTH + "│", ""),
             *canvas.row(r)] for r in range(canvas.height)]


def x_axis(ticks: list[int], at: Place, cells: int, width: int, named: bool) -> list[Row]:
    """The axis line with a mark at each tick, the ticks' numbers under their marks (a number
    that would touch the one before is left out), and the axis's name."""
    line, numbers = ["─"] * cells, [" "] * cells
    free = 0
    for t in ticks:
        col = min(cells - 1, at(t, 0)[0] // 2)
        line[col] = "┬"
        label = str(t)
        start = min(max(0, col - len(label) // 2), cells - len(label))
        if start >= free:
            numbers[start:start + len(label)] = label
            free = start + len(label) + 1
    pad = " " * LABEL_WIDTH
    rows = [[(pad + "└" + "".join(line), "")], [(pad + " " + "".join(numbers), "")]]
    return rows + [[("time step t".center(width), "")]] * named


class AccuracyPlot(Widget):
    """SNN accuracy (%) at each step t. For one run the ANN's accuracy on the same images is a
    reference line and the step from which the SNN stays within 1 point of it is marked; for
    several runs (the runs screen) their curves are overlaid, with a legend."""

    curves: Curves = ()  # what is drawn now
    steps = 0  # the T its x axis is drawn for (at least; a longer curve widens it)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._figure: tuple[Any, ...] = ((), 0, None, None)  # what the curves are drawn from
        self._built: tuple[Any, ...] | None = None  # (figure, size, style) of the strips
        self._strips: list[Strip] = []
        self.builds = 0  # figures built so far: a repaint for another reason builds none

    def show_run(self, summary: Summary) -> None:
        """A run's curve, the ANN's accuracy and the first step within 1 point of it."""
        self.show_curves([("SNN", summary.accuracy_per_step)], summary.time_steps,
                         ann=summary.ann_accuracy, within=summary.first_step_within_1pt)
        acc = summary.accuracy_per_step
        subtitle = (
            f"T: {percent(acc[-1] if acc else None)} · ANN {percent(summary.ann_accuracy)}"
            f" · ≤1 pt from t={summary.first_step_within_1pt or '—'}"
        )
        if (self.border_title, self.border_subtitle) != ("accuracy vs t", subtitle):
            self.border_title, self.border_subtitle = "accuracy vs t", subtitle  # repaints

    def show_curves(self, curves: Curves, steps: int, ann: float | None = None,
                    within: int | None = None) -> None:
        """Plot `curves`; nothing is redone when they are what is drawn already."""
        figure = (tuple((label, tuple(acc)) for label, acc in curves), steps, ann, within)
        if figure != self._figure:
            self._figure, self.curves, self.steps = figure, curves, steps
            self.refresh()

    def render_line(self, y: int) -> Strip:
        """Row `y` of the figure. The figure is built again only when the curves, the size or
        the widget's style changed: a new border subtitle or a layout pass reuses it."""
        key = (self._figure, tuple(self.size), self.rich_style)
        if key != self._built:
            self._strips = self.strips(plot_lines(*self._figure, size=tuple(self.size)))
            self._built = key
            self.builds += 1
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.size.width, self.rich_style)

    def strips(self, rows: list[Row]) -> list[Strip]:
        """Rows of runs as strips in the widget's style, as wide as the widget (the Line API:
        made straight from the runs, without text for Textual to lay out again)."""
        base = self.rich_style
        return [Strip([Segment(text, base + parsed(style)) for text, style in row])
                .crop_extend(0, self.size.width, base) for row in rows]


@lru_cache(maxsize=64)
def parsed(style: str) -> Style:
    return Style.parse(style) if style else Style.null()
