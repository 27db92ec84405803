"""Accuracy against time step: the curve the researcher watches climb."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from textual_plotext import PlotextPlot

# Named plotext colours render in 16- and 256-colour terminals alike.
CURVE_COLOURS = ("cyan", "orange", "green", "magenta", "yellow", "blue", "red", "white")


def percent(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage, or a dash when there is none yet."""
    return "—" if x is None else f"{100 * x:.{digits}f} %"


class AccuracyPlot(PlotextPlot):
    """SNN accuracy (%) at each step t. For one run the ANN's accuracy on the same images is a
    reference line and the step from which the SNN stays within 1 point of it is marked; for
    several runs (the runs screen) their curves are overlaid."""

    curves: Sequence[tuple[str, list[float]]] = ()  # what is drawn now: (label, accuracy per t)

    def show_run(self, summary: dict[str, Any]) -> None:
        self.show_curves([("SNN", summary["accuracy_per_step"])], summary["time_steps"],
                         ann=summary["ann_accuracy"], within=summary["first_step_within_1pt"])
        acc = summary["accuracy_per_step"]
        self.border_title = "accuracy vs t"
        self.border_subtitle = (
            f"T: {percent(acc[-1] if acc else None)} · ANN {percent(summary['ann_accuracy'])}"
            f" · ≤1 pt from t={summary['first_step_within_1pt'] or '—'}"
        )

    def show_curves(
        self,
        curves: Sequence[tuple[str, list[float]]],
        steps: int,
        ann: float | None = None,
        within: int | None = None,
    ) -> None:
        self.curves = curves
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        longest = max([steps, *(len(acc) for _, acc in curves)], default=0)
        plt.xlim(1, max(longest, 2))
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
