"""Rich rendering of the event stream: a live progress line and the final tables."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from bsnn.events import Event


def progress_bar(console: Console, label: str, figures: str, transient: bool) -> Progress:
    """The one progress line of the CLI: label, bar, n/total, live figures, elapsed, ETA."""
    return Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn(figures),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        console=console, transient=transient,
    )


class ProgressPrinter:
    """An `emit` consumer: phases as lines, batches as a progress bar with live accuracy."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress = progress_bar(console, "[bold]simulate", "{task.fields[acc]}",
                                     transient=False)
        self.task: Any = None

    def __call__(self, event: Event) -> None:
        kind = event["type"]
        if kind == "started":
            self.console.print(f"run [bold]{event['run_id']}[/] on {event['device']} → "
                               f"{event['run_dir']}")
        elif kind == "phase":
            self.console.print(f"[cyan]{event['name']}[/]: {event['message']}")
        elif kind == "warning":
            self.console.print(f"[yellow]warning:[/] {event['message']}")
        elif kind == "batch_done":
            if self.task is None:
                self.progress.start()
                self.task = self.progress.add_task("sim", total=event["images_total"], acc="")
            acc = event["correct_per_step"][-1] / event["images"]
            ann = event["ann_correct"] / event["images"]
            self.progress.update(self.task, completed=event["images"],
                                 acc=f"SNN {100 * acc:.2f} %  ANN {100 * ann:.2f} %")
        elif kind in ("finished", "failed", "cancelled"):
            self.stop()

    def stop(self) -> None:
        if self.task is not None:
            self.progress.stop()


def print_summary(console: Console, summary: dict[str, Any]) -> None:
    """Per-step accuracy at powers of two, and per-layer thresholds and rates."""
    acc = summary["accuracy_per_step"]
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
    for row in summary["layers"]:
        def fmt(v: Any, spec: str) -> str:
            return "—" if v is None else format(v, spec)
        layers.add_row(row["name"], str(row["neurons"]), fmt(row["threshold"], ".4g"),
                       fmt(row["firing_rate"], ".4f"), fmt(row["ann_rate"], ".4f"),
                       fmt(row["synops_per_image"], ",.0f"))
    console.print(layers)
    ann = summary["ann_accuracy"]
    within = summary["first_step_within_1pt"]
    console.print(
        f"SNN accuracy: [bold]{100 * acc[-1]:.2f} %[/] at T={len(acc)} "
        f"(ANN {100 * ann:.2f} % on the same {summary['images']} images; within 1 point "
        f"from t={within or '—'}); {summary['images_per_s'] or 0:.1f} images/s, "
        f"wall time {summary['wall_time_s'] or 0:.2f} s"
    )
