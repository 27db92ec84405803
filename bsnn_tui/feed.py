"""RunFeed: the buffer between a run's producer thread and the screens that draw it.

The producer (the engine in a worker thread, or `follow` tailing a log) appends events under a lock
and never waits on the UI; screens poll the feed a few times a second and redraw only when it
changed. So a fast engine cannot flood the event loop, and a slow terminal cannot slow the run.
A batch's counters are cumulative, so each replaces the one before (bsnn.events.keep): the feed
of a run of any length holds a few dozen events, not one per batch.
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass
from pathlib import Path

from bsnn.errors import BsnnError
from bsnn.events import Event, Failed, Started, keep
from bsnn.summary import Summary


@dataclass(frozen=True)
class Problem:
    """Why a run stopped, in the words the user acts on: what is wrong and how to fix it."""

    message: str
    fix: str = ""

    @classmethod
    def from_exception(cls, error: BaseException, run_dir: Path | None) -> Problem:
        """BsnnErrors carry their own fix; anything else is named by type and its traceback
        kept in `run_dir` when there is one."""
        if isinstance(error, BsnnError):
            return cls(error.message, error.fix)
        fix = "unexpected error; no run folder was created"
        if run_dir is not None and run_dir.is_dir():
            from bsnn.runfolder import RunFolder

            saved = RunFolder(run_dir).save_traceback("".join(traceback.format_exception(error)))
            fix = f"unexpected error; the traceback is in {saved}"
        return cls(f"{type(error).__name__}: {error}", fix)


class RunFeed:
    """The events of one run so far, safe to append from any thread."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self._lock = threading.Lock()
        self._events: list[Event] = []
        self._received = 0
        self.run_dir = run_dir
        self.problem: Problem | None = None
        self.active = False  # a producer is still appending
        self.detached = False  # its engine is a process of its own: quitting leaves it running

    def append(self, event: Event) -> None:
        """Called by the producer for each event; `started` tells a live run where its folder
        is (a folder opened from disk keeps its own path: the log may have been moved)."""
        with self._lock:
            keep(self._events, event)
            self._received += 1
            if self.run_dir is None and isinstance(event, Started) and event.run_dir:
                self.run_dir = Path(event.run_dir)

    def __len__(self) -> int:
        """Events received so far (those kept are fewer): it grows with every batch, so a screen
        that compares it between ticks sees each one."""
        with self._lock:
            return self._received

    def events(self) -> list[Event]:
        """A copy of the events kept so far (the latest batch's counters stand for all batches
        before it), for summarize() to read while the producer appends."""
        with self._lock:
            return list(self._events)

    def fail(self, error: BaseException) -> None:
        """Record why the producer stopped; the run screen shows it on its next tick.

        When the engine logged the failure itself (a `failed` event, with its own traceback
        file), that event is the record and nothing more is written."""
        with self._lock:
            logged = bool(self._events) and isinstance(self._events[-1], Failed)
        self.problem = Problem.from_exception(error, None if logged else self.run_dir)

    def why_failed(self, summary: Summary) -> Problem | None:
        """The engine's own `failed` event when it wrote one (summary.error), else what the
        producer raised, else None."""
        error = summary.error
        if error:
            return Problem(error.get("message") or "", error.get("fix") or "")
        return self.problem
