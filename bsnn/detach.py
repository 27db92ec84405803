"""Runs that outlive the terminal, and cancelling a run from another process.

A detached run is a separate Python process in a session of its own, with SIGHUP ignored, so a
dropped SSH connection or a closed laptop does not stop it; it writes the same
`<job-dir>/<run-id>/events.jsonl` as any run, so any viewer can follow it, and stops when its
cancel marker appears (`bsnn.runfolder.RunFolder.request_cancel`).

The API, shared by the CLI and the dashboard:
  start_detached(config)         spawn the engine; returns the run dir once the run has started
                                 (spawn_engine, then await_engine, for a caller that reports
                                 each event on the way or stops waiting on Ctrl-C)
  wait_until_done(run_dir, ...)  block until the run has ended (or the timeout passes)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bsnn import errors
from bsnn.config import RunConfig
from bsnn.errors import BsnnError, RunStorageError
from bsnn.events import (
    TERMINAL,
    BatchDone,
    Emit,
    Event,
    Failed,
    Phase,
    Started,
    describe,
    keep,
)
from bsnn.runfolder import ENGINE_LOG, RunFolder, new_run_id, run_dir_for
from bsnn.summary import pid_alive, summarize

_POLL_S = 0.05


def wait_until_done(run_dir: str | os.PathLike[str], timeout_s: float | None = None) -> str:
    """Poll until the run has ended and its summary files are written; return its status
    (`running` on timeout)."""
    folder = RunFolder.open(run_dir)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        status = folder.status()
        if status != "running" and _exports_done(folder, status):
            return status
        if deadline is not None and time.monotonic() > deadline:
            return status
        time.sleep(0.2)


def _exports_done(folder: RunFolder, status: str) -> bool:
    """Whether the run's summary files are final; an interrupted run, or one whose writer has
    exited, has no one left to write them."""
    if status == "interrupted":
        return True
    started = next((e for e in folder.events() if isinstance(e, Started)), None)
    if started is not None and started.host in (None, socket.gethostname()) \
            and started.pid and not pid_alive(started.pid):
        return True
    return folder.exports_final(status)  # still exporting, or a writer that lives on


def _log_tail(paths: list[Path], lines: int = 15) -> str:
    for path in paths:
        if path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            return "\n".join(text[-lines:])
    return ""


def _error_from(event: Failed) -> BsnnError:
    """The BsnnError a `failed` event describes; exit code 1 when it was not bad input."""
    cls = getattr(errors, event.error, None)
    if isinstance(cls, type) and issubclass(cls, BsnnError):
        return cls(event.message, event.fix)
    err = BsnnError(f"the run failed: {event.error}: {event.message}", event.fix)
    err.exit_code = 1
    return err


@dataclass
class Engine:
    """A detached engine just spawned: its process, its run dir and its early log."""

    proc: subprocess.Popen[bytes]
    run_dir: Path
    early_log: Path


def start_detached(config: RunConfig, wait_for: str | None = "simulate",
                   timeout_s: float = 300.0, on_event: Emit | None = None) -> Path:
    """Start `config` as an engine process of its own; return its run dir (absolute).

    `spawn_engine`, then `await_engine`: the cheap checks fail at once, bad input in the model
    or data raises its BsnnError here (by `simulate`), and `on_event` sees each event as it
    appears, so the caller can say what the engine is doing.
    """
    return await_engine(spawn_engine(config), wait_for, timeout_s, on_event)


def spawn_engine(config: RunConfig) -> Engine:
    """The cheap checks (options, device, model path, job dir), then the engine process, in a
    session of its own: a Ctrl-C in the caller's terminal never reaches it."""
    from bsnn.checkpoint import resolve_model_path
    from bsnn.devices import resolve_device

    config = RunConfig.from_dict(config.to_dict()).validate()
    config.run_id = config.run_id or new_run_id()
    resolve_device(config.device)
    resolve_model_path(config.model)
    job_dir = Path(config.job_dir).absolute()
    run_dir = run_dir_for(job_dir, config.run_id)
    if run_dir.exists():
        raise RunStorageError(f"run {config.run_id} already exists in {job_dir}",
                              "pick another --run-id")
    # The engine creates the run dir itself; until then its output goes to a hidden file in the
    # job dir, which it moves to <run-dir>/engine.log once the folder exists.
    early_log = RunFolder.early_log(job_dir, config.run_id)
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        log = open(early_log, "wb")  # noqa: SIM115 - handed to the child, closed below
    except OSError as e:
        raise RunStorageError(f"cannot write in the job dir {job_dir}: {e.strerror}",
                              "choose a writable --job-dir") from None
    with log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bsnn.detach", json.dumps(config.to_dict())],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )
    # A long-lived caller (the dashboard, a test) reaps the engine when it ends, so that a
    # killed engine does not linger as a zombie that still looks alive.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return Engine(proc, run_dir, early_log)


def await_engine(engine: Engine, wait_for: str | None = "simulate", timeout_s: float = 300.0,
                 on_event: Emit | None = None) -> Path:
    """Wait until the engine's run reaches phase `wait_for` (by `simulate` the model, data and
    conversion have been checked), or with None until its first event; `on_event` gets each
    event on the way. Raises the BsnnError of a `failed` event, or one with the end of its
    `engine.log` if the engine dies first; returns the run dir (the run goes on if only slow)."""
    run_dir, proc = engine.run_dir, engine.proc
    for event in _watch(run_dir, proc, time.monotonic() + timeout_s):
        if on_event is not None:
            on_event(event)
        if isinstance(event, Failed):
            raise _error_from(event)
        if isinstance(event, TERMINAL) or wait_for is None or (
                isinstance(event, Phase) and event.name == wait_for):
            return run_dir
    if proc.poll() is None:  # still alive, just slow: the run goes on
        return run_dir
    tail = _log_tail([run_dir / ENGINE_LOG, engine.early_log])
    if not run_dir.exists():  # nothing else to keep: the message carries the log
        engine.early_log.unlink(missing_ok=True)
    raise BsnnError(f"the detached engine exited (code {proc.returncode}) before its run "
                    f"started; the end of its log:\n{tail or '(empty)'}",
                    "fix what the log names and start the run again")


def _watch(run_dir: Path, proc: subprocess.Popen[bytes], deadline: float) -> Iterator[Event]:
    """The run's events as they appear, until the engine exits or the deadline passes."""
    seen = 0
    while time.monotonic() < deadline:
        exited = proc.poll() is not None
        events = RunFolder(run_dir).events()
        yield from events[seen:]
        seen = len(events)
        if exited:
            return
        time.sleep(_POLL_S)


class DetachedEngine:
    """The detached process: the events in words to engine.log, signals turned into a cancel."""

    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.job_dir = Path(config.job_dir).absolute()
        self.run_dir = run_dir_for(self.job_dir, str(config.run_id))
        self.stop = threading.Event()
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        keep(self.events, event)
        if isinstance(event, Started):  # our stdout follows the file
            RunFolder(self.run_dir).engine_log(RunFolder.early_log(self.job_dir,
                                                                   str(self.config.run_id)))
        text = describe(event)
        if isinstance(event, BatchDone):
            accuracy = summarize(self.events).final_accuracy
            text += f", SNN accuracy {100 * accuracy:.2f} %"
        self.say(text)

    @staticmethod
    def say(text: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)

    def on_signal(self, signum: int, _frame: Any) -> None:
        self.say(f"{signal.Signals(signum).name}: cancelling at the next batch boundary")
        self.stop.set()

    def main(self) -> int:
        from bsnn.pipeline.runner import run

        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, self.on_signal)
        signal.signal(signal.SIGINT, self.on_signal)
        try:
            summary = run(self.config, emit=self.emit, cancel=self.stop.is_set)
        except BsnnError as err:
            self.say(f"error: {err.message}\nfix: {err.fix}")
            return err.exit_code
        return 0 if summary.status == "finished" else 1


if __name__ == "__main__":
    sys.exit(DetachedEngine(RunConfig.from_dict(json.loads(sys.argv[1]))).main())
