"""Accuracy against time step: the curve the researcher watches climb.

Drawing it is the dashboard's most expensive work (plotext builds the figure in Python and its
ANSI text is parsed again), so a live run's curve is redrawn at most once per PLOT_S, always
ending on the latest figures, and a repaint for any other reason reuses the last figure.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import RenderableType
from textual.timer import Timer
from textual_plotext import PlotextPlot

# Named plotext colours render in 16- and 256-colour terminals alike.
CURVE_COLOURS = ("cyan", "orange", "green", "magenta", "yellow", "blue", "red", "white")
# A person reads a changing curve about once a second; faster redraws only cost the engine CPU.
PLOT_S = 1.0


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


class AccuracyPlot(PlotextPlot):
    """SNN accuracy (%) at each step t. For one run the ANN's accuracy on the same images is a
    reference line and the step from which the SNN stays within 1 point of it is marked; for
    several runs (the runs screen) their curves are overlaid."""

    curves: Sequence[tuple[str, list[float]]] = ()  # what is drawn now: (label, accuracy per t)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._figure: tuple[Any, ...] | None = None  # what the curves were drawn from
        self._built: tuple[Any, ...] | None = None  # (figure, size, theme) of the cached text
        self._text: RenderableType = ""
        self._drawn_at = -PLOT_S
        self._pending: dict[str, Any] | None = None
        self._timer: Timer | None = None
        self.builds = 0  # plotext builds so far: what the coalescing saves is counted in tests

    def show_run(self, summary: dict[str, Any]) -> None:
        """Draw a run's curve: at once when it ends or first shows, else at most every PLOT_S."""
        wait = self._drawn_at + PLOT_S - time.monotonic()
        if summary["status"] != "running" or wait <= 0:
            self._draw_run(summary)
            return
        self._pending = summary
        if self._timer is None:
            self._timer = self.set_timer(wait, self._draw_pending)

    def _draw_pending(self) -> None:
        self._timer = None
        if self._pending is not None:
            self._draw_run(self._pending)

    def _draw_run(self, summary: dict[str, Any]) -> None:
        self._pending = None
        self._drawn_at = time.monotonic()
        self.show_curves([("SNN", summary["accuracy_per_step"])], summary["time_steps"],
                         ann=summary["ann_accuracy"], within=summary["first_step_within_1pt"])
        acc = summary["accuracy_per_step"]
        subtitle = (
            f"T: {percent(acc[-1] if acc else None)} · ANN {percent(summary['ann_accuracy'])}"
            f" · ≤1 pt from t={summary['first_step_within_1pt'] or '—'}"
        )
        if (self.border_title, self.border_subtitle) != ("accuracy vs t", subtitle):
            self.border_title, self.border_subtitle = "accuracy vs t", subtitle  # repaints

    def show_curves(
        self,
        curves: Sequence[tuple[str, list[float]]],
        steps: int,
        ann: float | None = None,
        within: int | None = None,
    ) -> None:
        """Plot `curves`; nothing is redone when they are what is drawn already."""
        figure = (tuple((label, tuple(acc)) for label, acc in curves), steps, ann, within)
        if figure == self._figure:
            return
        self._figure = figure
        self.curves = curves
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        longest = max([steps, *(len(acc) for _, acc in curves)], default=0)
        plt.xlim(1, max(longest, 2))
        plt.xticks(step_ticks(max(longest, 2)))
        plt.ylim(0, 100)
        plt.xlabel("time step t")
        for (label, acc), colour in zip(curves, CURVE_COLOURS * 8, strict=False):
            if acc:
                plt.plot(list(range(1, len(acc) + 1)), [100 * a for a in acc],
                         label=label if len(curves) > 1 else None, color=colour, marker="braille")
        if ann is not None:
            plt.hline(100 * ann, "gray")
        if within is not None:
            plt.vline(within, "green")
        self.refresh()

    def render(self) -> RenderableType:
        """The figure, built again only when the curves, the size or the theme changed (a new
        border subtitle or a layout pass repaints the widget, not the figure)."""
        key = (self._figure, self.size, self.app.theme)
        if key != self._built:
            self._text = super().render()
            self._built = key
            self.builds += 1
        return self._text
