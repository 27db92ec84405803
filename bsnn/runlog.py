"""A run's event log on disk: `events.jsonl`, one JSON event a line, appended as they happen.

Written only through `bsnn.runfolder.RunFolder`; read by anyone (a viewer in another process,
`bsnn runs`, `bsnn report`). The line format is bsnn.events' (`to_dict`, `parse_lines`).
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bsnn.errors import RunStorageError
from bsnn.events import TERMINAL, Event, parse_lines

EVENTS_FILE = "events.jsonl"
TAIL_BYTES = 4096


class EventLog:
    """Appends events to `events.jsonl`, one line each, flushed, and fsync'ed per terminal
    event. Writing errors (a full disk, a removed folder) raise RunStorageError naming the file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.seq = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            raise RunStorageError(f"cannot write the run log {self.path}: {e.strerror}",
                                  "choose a writable --job-dir") from None

    def __call__(self, event: Event) -> None:
        if event.seq is None:
            event.seq = self.seq
        self.seq += 1
        try:
            self._file.write(json.dumps(event.to_dict(), separators=(",", ":")) + "\n")
            self._file.flush()
            if isinstance(event, TERMINAL):
                os.fsync(self._file.fileno())
        except OSError as e:
            raise RunStorageError(f"cannot write the run log {self.path}: {e.strerror}",
                                  "free disk space or choose another --job-dir; events so far "
                                  "are kept") from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()


def _log_path(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    return path / EVENTS_FILE if path.is_dir() else path


def read_events(path: str | os.PathLike[str]) -> list[Event]:
    """All readable events of a log (a run folder or the events.jsonl itself)."""
    with open(_log_path(path), encoding="utf-8", errors="replace") as f:
        return parse_lines(f.readlines())


def last_event_type(path: str | os.PathLike[str]) -> str | None:
    """The `type` of the log's last line, read from its end rather than through the whole log."""
    with open(_log_path(path), "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - TAIL_BYTES))
        last = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        event = json.loads(last)
    except ValueError:
        return None
    return event.get("type") if isinstance(event, dict) else None


def follow(path: str | os.PathLike[str], stop: Callable[[], bool] = lambda: False,
           poll_s: float = 0.2) -> Iterator[Event]:
    """Yield events as they are appended, until a terminal event or `stop()`.

    Only whole lines are parsed, so a line being written is read once it is complete.
    """
    buffer = ""
    with open(_log_path(path), encoding="utf-8", errors="replace") as f:
        while True:
            chunk = f.read()
            if chunk:
                buffer += chunk
                *complete, buffer = buffer.split("\n")
                for event in parse_lines(complete):
                    yield event
                    if isinstance(event, TERMINAL):
                        return
            elif stop():
                return
            else:
                time.sleep(poll_s)
