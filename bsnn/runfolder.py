"""Run folders: the only code that writes or reads one.

`<job-dir>/<run-id>/` holds the event log (`events.jsonl`, bsnn.runlog), the exports (made by
bsnn.exports, written here atomically), the cancel marker, the traceback of a failure and a
detached engine's log; `<job-dir>/results/` the original's CSV lines. A run id is a name, never
a path: `check_run_id` refuses separators and `..`, so nothing lands outside the job dir.
Cancelling is a file: `request_cancel` drops a marker that the runner checks once per batch, from
any process (even on another host sharing the file system).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bsnn.errors import ConfigError, RunStorageError
from bsnn.events import TERMINAL, BatchDone, Event, Failed, RunWarning
from bsnn.exports import Writer, export_writers
from bsnn.runlog import EVENTS_FILE, EventLog, last_event_type, read_events
from bsnn.summary import Summary, last, summarize

CANCEL_FILE = "cancel"
SUMMARY_FILE = "summary.json"
TRACEBACK_FILE = "traceback.txt"
ENGINE_LOG = "engine.log"
TERMINAL_TYPES = frozenset(cls.type for cls in TERMINAL)


def new_run_id() -> str:
    """Time-based and random: two runs started in the same second still get distinct ids."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def check_run_id(run_id: str) -> str:
    """`run_id` if it is a plain folder name; ConfigError for anything that is a path."""
    bad = (not run_id or run_id in (".", "..") or run_id.startswith(".")
           or any(c in run_id for c in ("/", "\\", "\0")))
    if bad:
        raise ConfigError(f"run id {run_id!r} is not a plain name: a run id names a folder "
                          "inside the job dir", "pass a name without / \\ or a leading dot, "
                          "e.g. --run-id exp1 (run_id='exp1' in Python)")
    return run_id


def run_dir_for(job_dir: str | os.PathLike[str], run_id: str) -> Path:
    """Where the run `run_id` of `job_dir` lives: the one rule, for runs not started yet too."""
    return Path(job_dir) / check_run_id(run_id)


def atomic_write(path: Path, write: Writer) -> None:
    """`write(file)` into a temp file, then rename, so a reader never sees half a file; on an
    error the temp file is removed and the old file, if any, kept."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


@dataclass
class RunFolder:
    """One run's folder; `log` is open only in the process that runs it."""

    path: Path
    log: EventLog | None = None

    @classmethod
    def create(cls, job_dir: str | os.PathLike[str], run_id: str | None = None) -> RunFolder:
        """A fresh folder under the job dir with its log open; unique for runs started in the
        same second; a named run that exists already is refused."""
        root = Path(job_dir)
        try:
            root.mkdir(parents=True, exist_ok=True)
            for _ in range(100):
                path = run_dir_for(root, run_id or new_run_id())
                try:
                    path.mkdir()
                    return cls(path, EventLog(path / EVENTS_FILE))
                except FileExistsError:
                    if run_id:
                        raise RunStorageError(f"run {run_id} already exists in {root}",
                                              "pick another --run-id") from None
        except OSError as e:
            raise RunStorageError(f"cannot create a run folder in {root}: {e.strerror}",
                                  "choose a writable --job-dir") from None
        raise RunStorageError(f"could not find a free run id in {root}", "retry")

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> RunFolder:
        """An existing run's folder, to read or cancel; RunStorageError if it is not one."""
        path = Path(path)
        if not (path / EVENTS_FILE).is_file():
            raise RunStorageError(f"{path} is not a run folder (it has no {EVENTS_FILE})",
                                  "pass a run folder; `bsnn runs JOB_DIR` lists them")
        return cls(path)

    @property
    def run_id(self) -> str:
        return self.path.name

    def append(self, event: Event) -> None:
        """Log `event` (the run's own process only)."""
        if self.log is not None:
            self.log(event)

    def close(self) -> None:
        if self.log is not None:
            self.log.close()

    def events(self) -> list[Event]:
        """The run's events so far; none while its log does not exist yet."""
        log = self.path / EVENTS_FILE
        return read_events(log) if log.is_file() else []

    def summary(self) -> Summary:
        """summary.json where it holds the run's end (about 15x cheaper than parsing the whole
        log, which a job dir of 1,000 runs pays on every listing), else summarize() the log."""
        saved = ended_summary(self.path)
        return saved if saved is not None else summarize(self.events())

    def status(self) -> str:
        return self.summary().status

    def request_cancel(self) -> None:
        """Write the cancel marker atomically; the run stops at its next batch boundary."""
        path = self.path / CANCEL_FILE
        note = f"cancel requested by pid {os.getpid()} at {time.time():.3f}\n"
        try:
            atomic_write(path, lambda f: f.write(note.encode()))
        except OSError as e:
            raise RunStorageError(f"cannot write {path}: {e.strerror}",
                                  "check the run folder is writable (or stop the engine with "
                                  "kill -TERM PID)") from None

    def cancel_requested(self) -> bool:
        """Whether someone asked this run to stop (a stat per call: cheap enough per batch)."""
        return (self.path / CANCEL_FILE).exists()

    def save_traceback(self, text: str) -> Path | None:
        """Keep a failure's traceback (the first one: a later failure while failing adds
        nothing); None if it could not be written."""
        path = self.path / TRACEBACK_FILE
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(text)
        except FileExistsError:
            pass
        except OSError:
            return None
        return path

    def exports_final(self, status: str) -> bool:
        """Whether the summary files are those of the run's end: the run writes them as its
        terminal event will read (summary.json, then accuracy.png where there is a curve) and
        logs that event after them."""
        try:
            saved = json.loads((self.path / SUMMARY_FILE).read_text(encoding="utf-8"))
            if saved.get("status") != status:
                return False
            png, summary = self.path / "accuracy.png", self.path / SUMMARY_FILE
            return not saved.get("accuracy_per_step") or (
                png.is_file() and png.stat().st_mtime >= summary.stat().st_mtime)
        except (OSError, ValueError, AttributeError):
            return False

    @staticmethod
    def early_log(job_dir: Path, run_id: str) -> Path:
        """Where a detached engine writes until its run folder exists: a hidden file beside it."""
        return job_dir / f".{check_run_id(run_id)}.{ENGINE_LOG}"

    def engine_log(self, early: Path) -> None:
        """Move a detached engine's early output (bsnn.detach) into the folder; the engine's
        stdout follows the file."""
        if early.exists():
            os.replace(early, self.path / ENGINE_LOG)

    def write_exports(self, events: list[Event] | None = None) -> list[Path]:
        """Write every export file it can from the events (default: the log's); their paths.
        A file that cannot be made does not stop the others: all are tried, then one
        RunStorageError names the missing ones and how to get them back."""
        events = self.events() if events is None else events
        batch = last(events, BatchDone)
        writers = export_writers(summarize(events), batch.agreement_histogram if batch else None)
        paths, missing, reason = [], [], ""
        for name, make in writers.items():
            try:
                atomic_write(self.path / name, make())
                paths.append(self.path / name)
            except Exception as e:  # a full disk, or a figure that cannot be drawn
                missing.append(name)
                reason = reason or getattr(e, "strerror", None) or f"{type(e).__name__}: {e}"
        if missing:
            raise RunStorageError(f"could not write {', '.join(missing)} in {self.path}: "
                                  f"{reason}", "free disk space (or fix the folder's "
                                  f"permissions), then run `bsnn report {self.path}`")
        return paths

    def end(self, events: list[Event], final: Event, send: Callable[[Event], None],
            before: Callable[[], object] | None = None) -> RunStorageError | None:
        """Write the run's files (`before`, then the exports) as they read with `final`, its
        terminal event, and only then `send` it: whoever sees the run end finds its files. A
        write that fails turns a finished or cancelled run into a failed one naming what is
        missing (that error is returned for the caller to raise). A run failing already keeps
        its own error: what could not be written is a warning before it, never raised."""
        failing = isinstance(final, Failed)
        error = _attempt(failing, before, lambda: self.write_exports([*events, final]))
        if error is not None and failing:  # said before `failed`, and in what could be written
            _attempt(True, lambda: send(RunWarning(message=str(error))),
                     lambda: self.write_exports([*events, final]))
            error = None
        if error is None:
            error = _attempt(failing, lambda: send(final))
            if error is None or failing:
                return None
        failed = Failed(error=type(error).__name__, message=error.message, fix=error.fix,
                        images=int(getattr(final, "images", 0)))
        _attempt(True, lambda: self.write_exports([*events, failed]), lambda: send(failed))
        return error


def ended_summary(run_dir: Path) -> Summary | None:
    """summary.json when it was written for the event that ended the run: the log's last line
    is a terminal event of the summary's status (the run writes its exports just before that
    event, so a summary exported mid-run, or one a failed write left behind, is not taken), and
    it has every field of today's summaries (one from an older bsnn is not)."""
    try:
        ended = last_event_type(run_dir / EVENTS_FILE)
        if ended not in TERMINAL_TYPES:
            return None
        saved = json.loads((run_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(saved, dict) or saved.get("status") != ended \
            or not _summary_fields() <= saved.keys():
        return None
    return Summary.from_dict(saved)


@functools.cache
def _summary_fields() -> frozenset[str]:
    return frozenset(summarize([]).to_dict())


def _attempt(failing: bool, *writes: Callable[[], object] | None) -> RunStorageError | None:
    """Run every write, even after one failed; their failures as one error. While a run is
    failing anything a write raises is caught (its first error is the one that counts)."""
    errors: list[RunStorageError] = []
    for write in writes:
        try:
            if write is not None:
                write()
        except RunStorageError as e:
            errors.append(e)
        except Exception as e:
            if not failing:
                raise
            errors.append(RunStorageError(f"{type(e).__name__}: {e}", "see the traceback"))
    if len(errors) < 2:
        return errors[0] if errors else None
    return RunStorageError("; ".join(e.message for e in errors),
                           "; ".join(e.fix for e in errors))
