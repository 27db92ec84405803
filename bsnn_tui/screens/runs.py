"""The runs screen: every run in the job dir, its outcome, and their curves overlaid.

Each row comes from the run's own events.jsonl through summarize(), so a run another process is
writing, a finished one and one cut short by a crash are all read the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, cast

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import Worker, WorkerState

from bsnn.report import arch_text, model_name, run_record, run_title
from bsnn.rundir import list_runs
from bsnn_tui.widgets.accuracy import AccuracyPlot, percent
from bsnn_tui.widgets.progress import STATUS_STYLE

if TYPE_CHECKING:
    from bsnn_tui.app import BsnnApp


class RunEntry(NamedTuple):
    run_dir: Path
    summary: dict[str, Any]


def run_entries(job_dir: Path) -> list[RunEntry]:
    """The job dir's runs, newest first."""
    return [RunEntry(Path(s["run_dir"]), s) for s in reversed(list_runs(job_dir))]


class RunsScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "mark", "Mark"),
        Binding("enter", "open", "Open", show=True),
        Binding("n", "app.new_run", "New run"),
        Binding("escape", "app.pop_screen", "Back"),
    ]
    TITLE = "bsnn"

    def __init__(self, job_dir: Path) -> None:
        super().__init__()
        self.job_dir = job_dir
        self.entries: list[RunEntry] = []
        self.marked: set[Path] = set()

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield AccuracyPlot(id="overlay")
        yield Static(id="runs-hint")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"runs in {self.job_dir}"
        table = self.query_one(DataTable)
        table.border_title = "runs"
        for label, key in (("", "mark"), ("run", "run"), ("status", "status"),
                           ("acc@T", "acc"), ("ANN", "ann"), ("T", "T"), ("p", "p"),
                           ("images", "images"), ("model", "model"), ("arch", "arch"),
                           ("data set", "dataset"), ("device", "device")):
            table.add_column(label, key=key)
        self.query_one("#overlay").border_title = "accuracy vs t"

    def on_screen_resume(self) -> None:
        """Reload on every visit: runs finish and new ones appear while we are away."""
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="list")
    def _load(self) -> list[RunEntry]:
        return run_entries(self.job_dir)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != "list":
            return
        if event.worker.state == WorkerState.SUCCESS:
            self.show_entries(event.worker.result)
        elif event.worker.state == WorkerState.ERROR:
            self.notify(str(event.worker.error), title="could not list runs", severity="error")

    def show_entries(self, entries: list[RunEntry]) -> None:
        self.entries = entries
        self.marked &= {e.run_dir for e in entries}
        table = self.query_one(DataTable)
        row = table.cursor_row
        table.clear()
        for e in entries:
            s = e.summary
            r = run_record(s)  # what ran, not what was typed
            total = f"/{s['images_total']}" if s["images_total"] else ""
            table.add_row(
                "✓" if e.run_dir in self.marked else " ",
                e.run_dir.name,
                Text(s["status"], style=STATUS_STYLE.get(s["status"], "")),
                percent(s["final_accuracy"]),
                percent(s["ann_accuracy"]),
                str(r["time_steps"] or "—"),
                str(r["percentile"] or "—"),
                f"{s['images']}{total}",
                model_name(r["model"]),
                arch_text(r),
                str(r.get("dataset") or "?"),
                str(r.get("device") or "?"),
                key=str(e.run_dir),
            )
        if entries:
            table.move_cursor(row=min(row, len(entries) - 1))
        self.query_one("#runs-hint", Static).update(
            f"{len(entries)} runs · Enter opens · Space marks runs to overlay their curves"
            if entries else f"no runs in {self.job_dir} yet: start one (s)")
        self.show_overlay()

    def current(self) -> RunEntry | None:
        table = self.query_one(DataTable)
        if not self.entries or table.cursor_row < 0:
            return None
        return self.entries[min(table.cursor_row, len(self.entries) - 1)]

    def show_overlay(self) -> None:
        """The marked runs' curves; with none marked, the highlighted run's."""
        chosen = [e for e in self.entries if e.run_dir in self.marked]
        if not chosen and (entry := self.current()) is not None:
            chosen = [entry]
        plot = self.query_one("#overlay", AccuracyPlot)
        steps = max((e.summary["time_steps"] for e in chosen), default=0)
        if len(chosen) == 1:
            s = chosen[0].summary
            plot.show_curves([(chosen[0].run_dir.name, s["accuracy_per_step"])], steps,
                             ann=s["ann_accuracy"], within=s["first_step_within_1pt"])
            plot.border_subtitle = f"{chosen[0].run_dir.name} · {run_title(s)}"
        else:
            plot.show_curves([(e.run_dir.name, e.summary["accuracy_per_step"]) for e in chosen],
                             steps)
            plot.border_subtitle = f"{len(chosen)} runs overlaid"

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        if not self.marked:
            self.show_overlay()

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_open()

    def action_mark(self) -> None:
        entry = self.current()
        if entry is None:
            return
        self.marked ^= {entry.run_dir}
        table = self.query_one(DataTable)
        table.update_cell(str(entry.run_dir), "mark", "✓" if entry.run_dir in self.marked else " ")
        self.show_overlay()

    def action_open(self) -> None:
        entry = self.current()
        if entry is not None:
            cast("BsnnApp", self.app).open_run(entry.run_dir)
