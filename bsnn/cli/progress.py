"""Rich rendering of the event stream: a live progress line and the final tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from bsnn.events import (
    TERMINAL,
    BatchDone,
    Cancelled,
    Event,
    Failed,
    Phase,
    RunWarning,
    describe,
    keep,
)
from bsnn.records import run_title, weights_in_words
from bsnn.summary import Summary, summarize


def progress_bar(console: Console, label: str, figures: str, transient: bool) -> Progress:
    """The one progress line of the CLI: label, bar, n/total, live figures, elapsed, ETA."""
    return Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn(figures),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=transient,
    )


STYLES = {Phase: "cyan", RunWarning: "yellow", Failed: "red", Cancelled: "yellow"}


class ProgressPrinter:
    """An `emit` consumer: events in words (bsnn.events.describe) as lines, batches as a
    progress bar with the live accuracies of `summarize`."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = progress_bar(console, "[bold]simulate", "{task.fields[acc]}",
                                     transient=False)
        self.task: Any = None
        self.events: list[Event] = []

    def __call__(self, event: Event) -> None:
        keep(self.events, event)
        if isinstance(event, BatchDone):
            self.show_batch(event)
            return
        if isinstance(event, TERMINAL):
            self.stop()
        style = STYLES.get(type(event))
        text = escape(describe(event))
        self.console.print(f"[{style}]{text}[/]" if style else text, highlight=False)

    def show_batch(self, event: BatchDone) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task("sim", total=event.images_total, acc="")
        s = summarize(self.events)
        self.progress.update(self.task, completed=s.images,
                             acc=f"SNN {100 * (s.final_accuracy or 0):.2f} %  "
                                 f"ANN {100 * (s.ann_accuracy or 0):.2f} %")

    def stop(self) -> None:
        if self.task is not None:
            self.progress.stop()
            self.task = None


def print_summary(console: Console, summary: Summary) -> None:
    """Per-step accuracy at powers of two, and per-layer thresholds and rates."""
    acc = summary.accuracy_per_step
    console.print(f"[bold]{escape(run_title(summary))}[/]", highlight=False)  # what ran
    if not acc:
        console.print("no batch was simulated")
        return
    table = Table(title="accuracy per time step", show_edge=False)
    table.add_column("t", justify="right")
    table.add_column("SNN", justify="right")
    marks = sorted({t for t in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512) if t <= len(acc)}
                   | {len(acc)})
    for t in marks:
        table.add_row(str(t), f"{100 * acc[t - 1]:.2f} %")
    console.print(table)
    layers = Table(title="layers", show_edge=False)
    for col in ("layer", "neurons", "threshold", "firing rate", "ANN rate", "synops/img"):
        layers.add_column(col, justify="right")
    def fmt(v: Any, spec: str) -> str:
        return "—" if v is None else format(v, spec)

    for row in summary.layers:
        layers.add_row(row.name, str(row.neurons), fmt(row.threshold, ".4g"),
                       fmt(row.firing_rate, ".4f"), fmt(row.ann_rate, ".4f"),
                       fmt(row.synops_per_image, ",.0f"))
    console.print(layers)
    ann = summary.ann_accuracy or 0.0
    within = summary.first_step_within_1pt
    console.print(
        f"SNN accuracy: [bold]{100 * acc[-1]:.2f} %[/] at T={len(acc)} "
        f"(ANN {100 * ann:.2f} % on the same {summary.images} images; within 1 point "
        f"from t={within or '—'}; {weights_in_words(summary)}); "
        f"{summary.images_per_s or 0:.1f} images/s, "
        f"wall time {summary.wall_time_s or 0:.2f} s"
    )
