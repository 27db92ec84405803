"""The runs screen: every run in the job dir, its outcome, and their curves overlaid.

Each row comes from list_runs: the summary a run wrote as it ended, otherwise its own
events.jsonl through summarize(), so a run another process is writing, a finished one and one cut
short by a crash are all read the same way.

The table fits its columns to its width (widgets/runs_table.py). Only runs with an accuracy
curve can be marked for the overlay: one that failed before its first batch has none to show.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, NamedTuple

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import Worker, WorkerState, get_current_worker

from bsnn.jobdir import iter_runs
from bsnn.records import arch_text, model_name, run_record, run_title
from bsnn.summary import Summary
from bsnn_tui.widgets.accuracy import AccuracyPlot, percent
from bsnn_tui.widgets.progress import STATUS_STYLE
from bsnn_tui.widgets.runs_table import Cells, RunsTable, cell

FIRST_ROWS = 60  # more than a screenful
ROWS_PER_CHUNK = 150


class RunEntry(NamedTuple):
    run_dir: Path
    summary: Summary


class RunsScreen(Screen[None]):
    class OpenRun(Message):
        """The user asked to open a run's panels; the app decides how (live or followed)."""

        def __init__(self, run_dir: Path) -> None:
            super().__init__()
            self.run_dir = run_dir

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
        self._listing: list[RunEntry] = []  # the listing being read
        self._cursor: tuple[Path | None, int] = (None, -1)  # the run and row to come back to
        self._lister: Worker[None] | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield RunsTable(id="runs")
        yield AccuracyPlot(id="overlay")
        yield Static(id="runs-hint")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"runs in {self.job_dir}"
        self.query_one(RunsTable).border_title = "runs"
        self.query_one("#overlay").border_title = "accuracy vs t"

    def on_screen_resume(self) -> None:
        """Reload on every visit: runs finish and new ones appear while we are away."""
        self._load()

    @work(thread=True, exclusive=True, exit_on_error=False, group="list")
    def _load(self) -> None:
        """Read the runs newest first and hand them over in chunks: the first screenful shows
        while the rest of a large job dir is read, and the table (which measures every cell
        it is given) grows a chunk per call, so keys stay live."""
        worker = get_current_worker()
        self.app.call_from_thread(self._begin_listing, worker)
        chunk: list[RunEntry] = []
        size = FIRST_ROWS
        for listed in iter_runs(self.job_dir, newest_first=True):
            if worker.is_cancelled:
                return
            chunk.append(RunEntry(listed.run_dir, listed.summary))
            if len(chunk) == size:
                self.app.call_from_thread(self._add_entries, worker, chunk)
                chunk, size = [], ROWS_PER_CHUNK
        self.app.call_from_thread(self._add_entries, worker, chunk, done=True)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "list" and event.worker.state == WorkerState.ERROR:
            self.notify(str(event.worker.error), title="could not list runs", severity="error")

    def _begin_listing(self, worker: Worker[None]) -> None:
        self._lister = worker  # a newer listing ends an older one's chunks
        current = self.current()
        self._cursor = (current.run_dir if current else None,
                        self.query_one(DataTable).cursor_row)
        self._listing = []

    def _add_entries(self, worker: Worker[None], chunk: list[RunEntry], done: bool = False,
                     ) -> None:
        if worker is not self._lister:
            return
        table = self.query_one(RunsTable)
        if not self._listing and (chunk or done):
            table.start_over()
        self._listing.extend(chunk)
        self.entries = self._listing
        table.add_runs([(str(e.run_dir), self._cells(e)) for e in chunk])
        self._restore_cursor(chunk, done)
        if done:
            self.marked &= {e.run_dir for e in self.entries}
            self.query_one("#runs-hint", Static).update(
                f"{len(self.entries)} runs · Enter opens · Space marks runs to overlay their "
                f"curves" if self.entries
                else f"no runs in {self.job_dir} yet: start one (ctrl+s on the form)")
        if len(self.entries) == len(chunk) or done:
            self.show_overlay()

    def _restore_cursor(self, chunk: list[RunEntry], done: bool) -> None:
        """Back on the run it was on when that run's row comes; at the end, if it is gone,
        on the row it was at (or the last one)."""
        run_dir, row = self._cursor
        table = self.query_one(DataTable)
        if run_dir is not None and any(e.run_dir == run_dir for e in chunk):
            table.move_cursor(row=table.get_row_index(str(run_dir)))
            self._cursor = (None, -1)
        elif done and row >= 0 and self.entries and \
                all(e.run_dir != run_dir for e in self.entries):
            table.move_cursor(row=min(row, len(self.entries) - 1))

    def _cells(self, e: RunEntry) -> Cells:
        """One run's row, by column (widgets/runs_table.py picks the ones that fit)."""
        s = e.summary
        r = run_record(s)  # what ran, not what was typed
        total = f"/{s.images_total}" if s.images_total else ""
        values = {
            "mark": "✓" if e.run_dir in self.marked else " ", "run": e.run_dir.name,
            "acc": percent(s.final_accuracy), "ann": percent(s.ann_accuracy),
            "T": str(r["time_steps"] or "—"), "p": str(r["percentile"] or "—"),
            "images": f"{s.images}{total}", "model": model_name(r["model"]),
            "dataset": str(r.get("dataset") or "?"), "arch": arch_text(r),
            "device": str(r.get("device") or "?"),
        }
        return {"status": cell(s.status, STATUS_STYLE.get(s.status, "")),
                **{key: cell(value) for key, value in values.items()}}

    def current(self) -> RunEntry | None:
        table = self.query_one(DataTable)
        if not self.entries or table.cursor_row < 0:
            return None
        return self.entries[min(table.cursor_row, len(self.entries) - 1)]

    def show_overlay(self) -> None:
        """The marked runs' curves; with none marked, the highlighted run's. A run without a
        curve is in neither the legend nor the x axis of an overlay (it cannot be marked)."""
        chosen = [e for e in self.entries
                  if e.run_dir in self.marked and e.summary.accuracy_per_step]
        if not chosen and (entry := self.current()) is not None:
            chosen = [entry]
        plot = self.query_one("#overlay", AccuracyPlot)
        steps = max((e.summary.time_steps for e in chosen), default=0)
        if len(chosen) == 1:
            s = chosen[0].summary
            plot.show_curves([(chosen[0].run_dir.name, s.accuracy_per_step)], steps,
                             ann=s.ann_accuracy, within=s.first_step_within_1pt)
            none = "" if s.accuracy_per_step else f" · no accuracy curve ({s.status})"
            plot.border_subtitle = f"{chosen[0].run_dir.name} · {run_title(s)}{none}"
        else:
            plot.show_curves([(e.run_dir.name, e.summary.accuracy_per_step) for e in chosen],
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
        """Mark or unmark the highlighted run for the overlay; a run with no curve (one that
        ended before its first batch) would only widen the x axis and the legend."""
        entry = self.current()
        if entry is None:
            return
        if entry.run_dir not in self.marked and not entry.summary.accuracy_per_step:
            self.notify(f"{entry.run_dir.name} has no accuracy curve ({entry.summary.status} "
                        f"before its first batch): nothing to overlay", severity="warning")
            return
        self.marked ^= {entry.run_dir}
        mark = "✓" if entry.run_dir in self.marked else " "
        self.query_one(RunsTable).set_cell(str(entry.run_dir), "mark", cell(mark))
        self.show_overlay()

    def action_open(self) -> None:
        entry = self.current()
        if entry is not None:
            self.post_message(self.OpenRun(entry.run_dir))
