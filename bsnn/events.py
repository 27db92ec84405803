"""The run's event stream and its JSON-lines log.

One stream, three consumers: the dashboard, the CLI's progress, and `<run-dir>/events.jsonl`.
Each event is a flat JSON object with `type`, `time` (unix seconds) and `seq`. Counters in
`batch_done` are cumulative, so the last one alone describes the run so far: a viewer that
attaches late, or a log cut short by a crash, still has everything up to that batch.

Event types and their fields:
  started     run_id, run_dir, config (dict), device, versions, pid
  phase       name (load_model | load_data | calibrate | convert | simulate | export), message
  thresholds  layers: [{name, kind, neurons, shape, binary, threshold, threshold_min,
              threshold_max, lam, fan_out, sources}], percentile, granularity
  batch_done  batch, images, images_total, correct_per_step [T], ann_correct,
              spikes {layer: [T]}, synops {layer: [T]}, ann_activation {layer: sum},
              elapsed_s
  finished    images, wall_time_s, final_accuracy
  failed      error, message, fix, images
  cancelled   images
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bsnn.errors import RunStorageError

Event = dict[str, Any]
Emit = Callable[[Event], None]

EVENTS_FILE = "events.jsonl"
TERMINAL = ("finished", "failed", "cancelled")


def make_event(kind: str, **fields: Any) -> Event:
    """An event of type `kind`; `time` is added here, `seq` by the writer."""
    return {"type": kind, "time": time.time(), **fields}


class EventLog:
    """Appends events to `events.jsonl`, one line each, flushed and fsync'ed per terminal event.

    Writing errors (a full disk, a removed folder) raise RunStorageError naming the file.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.seq = 0
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            raise RunStorageError(
                f"cannot write the run log {self.path}: {e.strerror}",
                "choose a writable --job-dir",
            ) from None

    def __call__(self, event: Event) -> None:
        event.setdefault("seq", self.seq)
        self.seq += 1
        try:
            self._file.write(json.dumps(event, separators=(",", ":")) + "\n")
            self._file.flush()
            if event["type"] in TERMINAL:
                os.fsync(self._file.fileno())
        except OSError as e:
            raise RunStorageError(
                f"cannot write the run log {self.path}: {e.strerror}",
                "free disk space or choose another --job-dir; events so far are kept",
            ) from None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._file.close()


def parse_lines(lines: list[str]) -> list[Event]:
    """Events from JSON lines; a torn or corrupt line (a crash mid-write) is skipped."""
    events = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and "type" in event:
            events.append(event)
    return events


def read_events(path: str | os.PathLike[str]) -> list[Event]:
    """All readable events of a log (a run folder or the events.jsonl itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / EVENTS_FILE
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse_lines(f.readlines())


def follow(
    path: str | os.PathLike[str],
    stop: Callable[[], bool] = lambda: False,
    poll_s: float = 0.2,
) -> Iterator[Event]:
    """Yield events as they are appended, until a terminal event or `stop()`.

    Only whole lines are parsed, so a line being written is read once it is complete.
    """
    path = Path(path)
    if path.is_dir():
        path = path / EVENTS_FILE
    buffer = ""
    with open(path, encoding="utf-8", errors="replace") as f:
        while True:
            chunk = f.read()
            if chunk:
                buffer += chunk
                *complete, buffer = buffer.split("\n")
                for event in parse_lines(complete):
                    yield event
                    if event["type"] in TERMINAL:
                        return
            elif stop():
                return
            else:
                time.sleep(poll_s)
