"""The run screen: every panel of one run, redrawn a few times a second from its feed.

The same screen shows a run this app started, a run another process is writing (followed
through its events.jsonl) and a finished run read from disk: all three are just a RunFeed.

Its layout does not move while a run goes on: the plot and the layers panel split the height in
fixed shares, and every table column is as wide from the start as its figures will be. Below
NARROW columns the heatmap and the bars are left out (app.tcss), so every figure fits at 80x24.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, ScrollableContainer
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState, get_current_worker

from bsnn.events import Event
from bsnn.records import run_title
from bsnn.runfolder import RunFolder
from bsnn.summary import Summary, summarize
from bsnn_tui import producers
from bsnn_tui.feed import Problem, RunFeed
from bsnn_tui.widgets.accuracy import AccuracyPlot
from bsnn_tui.widgets.heatmap import RateHeatmap
from bsnn_tui.widgets.log import RunLog
from bsnn_tui.widgets.progress import RunProgress
from bsnn_tui.widgets.rates import FiringRateBars, FiringRates
from bsnn_tui.widgets.thresholds import ThresholdsTable, energy_ratio

REDRAW_S = 0.25
# New figures wait until the panels have shown the last ones this long: a person reads them
# about once a second, and every redraw more often is CPU taken from the engine.
PANELS_S = 1.0
# A followed run can die without a last word; re-check its status now and then even when
# no event arrived (every this many redraw ticks).
RECHECK_TICKS = 8
NARROW = 100  # columns below which the screen has the class -narrow


class RunScreen(Screen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "export", "Export"),
        Binding("n", "app.new_run", "New run"),
    ]
    TITLE = "bsnn"
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"),
                                                               (NARROW, "-wide")]

    def __init__(self, feed: RunFeed, follow: Path | None = None) -> None:
        super().__init__()
        self.feed = feed
        self.follow = follow
        self.summary: Summary = summarize([])
        self.exported: list[Path] = []
        self._seen = 0
        self._ticks = 0
        self._state: tuple[Any, ...] | None = None
        self._drawn_at = -PANELS_S
        self._said_detached = False

    def compose(self) -> ComposeResult:
        yield Header()
        yield RunProgress(id="progress")
        with Horizontal(id="top"):
            yield AccuracyPlot(id="accuracy")
            yield RunLog(id="log")
        # Tables whose rows are the same layers, side by side, scrolled together.
        with ScrollableContainer(id="layers"), Horizontal(id="layer-rows"):
            yield ThresholdsTable(id="thresholds")
            yield FiringRates(id="rates")
            yield FiringRateBars(id="bars")
            yield RateHeatmap(id="heatmap")
        yield Footer()

    def on_mount(self) -> None:
        layers = "layers: thresholds · synops · energy · r · firing rates"
        for selector, title in (("#accuracy", "accuracy vs t"), ("#log", "log"),
                                ("#layers", layers)):
            self.query_one(selector).border_title = title
        self.redraw()
        self.set_interval(REDRAW_S, self.redraw)
        if self.follow is not None:
            self._follow(self.follow)

    @work(thread=True, exclusive=True, exit_on_error=False, group="follow")
    def _follow(self, run_dir: Path) -> None:
        worker = get_current_worker()
        producers.follow_log(run_dir, self.feed, lambda: worker.is_cancelled)

    def redraw(self) -> None:
        """Re-summarise the events so far and redraw, but only when something changed: new
        events at most every PANELS_S, a failure or the end of the producer at once."""
        self._ticks += 1
        state = (len(self.feed), self.feed.problem, self.feed.active)
        if state == self._state and self._ticks % RECHECK_TICKS:
            return
        now = time.monotonic()
        only_new_events = self._state is not None and state[1:] == self._state[1:]
        if only_new_events and now - self._drawn_at < PANELS_S:
            return
        self._state, self._drawn_at = state, now
        events = self.feed.events()
        before = self.summary.status
        self.summary = summary = summarize(events)
        if summary.status != before:
            self.app.refresh_bindings()  # `c` cancels only a run that is still going
        # the run id is on the status line; the header says what runs (the resolved record)
        self.title = run_title(summary) if summary.run_id else "bsnn: starting"
        self.sub_title = self.mode()
        self.query_one(RunProgress).show(summary, self.feed.why_failed(summary),
                                         self.feed.active)
        self.query_one(AccuracyPlot).show_run(summary)
        self.query_one(FiringRates).show(summary)
        self.query_one(FiringRateBars).show(summary)
        self.query_one(RateHeatmap).show(summary)
        self.query_one(ThresholdsTable).show(summary)
        layers = self.query_one("#layers")
        if layers.border_subtitle != (ratio := energy_ratio(summary)):
            layers.border_subtitle = ratio
        log = self.query_one(RunLog)
        log.add(events[self._seen:])
        self._seen = len(events)
        if self.feed.detached and self.feed.run_dir is not None and not self._said_detached:
            self._said_detached = True
            log.write(f"detached: the engine is a process of its own; quitting (q) leaves it "
                      f"running. Follow it again with bsnn-tui --attach {self.feed.run_dir}")

    def mode(self) -> str:
        """How this screen gets the run: from its own engine, or from a log another process
        (a detached engine) writes."""
        if self.feed.detached:
            return "detached"
        live = self.follow is not None and self.summary.status == "running"
        return "attached" if live else ""

    def action_export(self) -> None:
        if self.feed.run_dir is None:
            self.notify("nothing to export yet: the run has not started", severity="warning")
            return
        self._export(self.feed.run_dir, self.feed.events())

    @work(thread=True, exclusive=True, exit_on_error=False, group="export")
    def _export(self, run_dir: Path, events: list[Event]) -> list[Path]:
        return RunFolder(run_dir).write_exports(events)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group == "export" and worker.state == WorkerState.SUCCESS:
            self.exported = worker.result
            log = self.query_one(RunLog)
            for path in self.exported:
                log.write(f"exported {path}")
            self.notify("\n".join(p.name for p in self.exported),
                        title=f"exported to {self.feed.run_dir}")
        elif worker.group == "export" and worker.state == WorkerState.ERROR:
            problem = Problem.from_exception(worker.error, None)
            self.notify(f"{problem.message}\n{problem.fix}", severity="error",
                        title="export failed")
        elif worker.group == "follow" and worker.state == WorkerState.ERROR:
            self.feed.fail(worker.error)
