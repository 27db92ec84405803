"""The runs screen: every run in the job dir, its outcome, and their curves overlaid.

Each row comes from list_runs: the summary a run wrote as it ended, otherwise its own
events.jsonl through summarize(), so a run another process is writing, a finished one and one cut
short by a crash are all read the same way.
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
from textual.worker import Worker, WorkerState, get_current_worker

from bsnn.report import arch_text, model_name, run_record, run_title
from bsnn.rundir import iter_runs
from bsnn_tui.widgets.accuracy import AccuracyPlot, percent
from bsnn_tui.widgets.progress import STATUS_STYLE

if TYPE_CHECKING:
    from bsnn_tui.app import BsnnApp


FIRST_ROWS = 60  # more than a screenful
ROWS_PER_CHUNK = 150


class RunEntry(NamedTuple):
    run_dir: Path
    summary: dict[str, Any]


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
        self._listing: list[RunEntry] = []  # the listing being read
        self._cursor: tuple[Path | None, int] = (None, -1)  # the run and row to come back to
        self._lister: Worker[None] | None = None

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
    def _load(self) -> None:
        """Read the runs newest first and hand them over in chunks: the first screenful shows
        while the rest of a large job dir is read, and the table (which measures every cell
        it is given) grows a chunk per call, so keys stay live."""
        worker = get_current_worker()
        self.app.call_from_thread(self._begin_listing, worker)
        chunk: list[RunEntry] = []
        size = FIRST_ROWS
        for summary in iter_runs(self.job_dir, newest_first=True):
            if worker.is_cancelled:
                return
            chunk.append(RunEntry(Path(summary["run_dir"]), summary))
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
        table = self.query_one(DataTable)
        if not self._listing and (chunk or done):
            table.clear()
        self._listing.extend(chunk)
        self.entries = self._listing
        for e in chunk:
            table.add_row(*self._cells(e), key=str(e.run_dir))
        self._restore_cursor(chunk, done)
        if done:
            self.marked &= {e.run_dir for e in self.entries}
            self.query_one("#runs-hint", Static).update(
                f"{len(self.entries)} runs · Enter opens · Space marks runs to overlay their "
                f"curves" if self.entries else f"no runs in {self.job_dir} yet: start one (s)")
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

    def _cells(self, e: RunEntry) -> tuple[Text, ...]:
        """One run's row; Text, not str, so a name with [brackets] is not read as markup."""
        s = e.summary
        r = run_record(s)  # what ran, not what was typed
        total = f"/{s['images_total']}" if s["images_total"] else ""
        return (
            Text("✓" if e.run_dir in self.marked else " "),
            Text(e.run_dir.name),
            Text(s["status"], style=STATUS_STYLE.get(s["status"], "")),
            Text(percent(s["final_accuracy"])),
            Text(percent(s["ann_accuracy"])),
            Text(str(r["time_steps"] or "—")),
            Text(str(r["percentile"] or "—")),
            Text(f"{s['images']}{total}"),
            Text(model_name(r["model"])),
            Text(arch_text(r)),
            Text(str(r.get("dataset") or "?")),
            Text(str(r.get("device") or "?")),
        )

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
