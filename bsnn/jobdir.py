"""A job dir: the run folders in it, listed, and the original's results file beside them.

With bsnn.runfolder the only code that reads or writes a job dir.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from bsnn.errors import RunStorageError
from bsnn.runfolder import RunFolder
from bsnn.runlog import EVENTS_FILE
from bsnn.summary import Summary

RESULTS_DIR = "results"
RESULTS_HEADER = "seed,simulation time,batch size,inference time,accuracy\n"


@dataclass(frozen=True)
class ListedRun:
    """A run folder of a job dir and its summary."""

    run_dir: Path
    summary: Summary

    @property
    def run_id(self) -> str:
        return self.summary.run_id or self.run_dir.name


def iter_runs(job_dir: str | os.PathLike[str], newest_first: bool = False,
              skipped: Callable[[Path, str], None] | None = None) -> Iterator[ListedRun]:
    """The run folders of `job_dir` one at a time (run ids begin with their start time, so
    name order is age order), for a reader that shows the first ones while the rest are read.
    A folder whose log is not a regular file, or cannot be read, is passed to `skipped` with
    the reason, and the listing goes on."""
    root = Path(job_dir)
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.iterdir() if p.is_dir()), reverse=newest_first):
        log = folder / EVENTS_FILE
        if not os.path.lexists(log):
            continue
        if not log.is_file():
            if skipped is not None:
                skipped(folder, f"its {EVENTS_FILE} is not a regular file")
            continue
        try:
            yield ListedRun(folder, RunFolder(folder).summary())
        except OSError as e:
            if skipped is not None:
                skipped(folder, f"its {EVENTS_FILE} cannot be read: {e.strerror or e}")


def list_runs(job_dir: str | os.PathLike[str]) -> list[ListedRun]:
    """Every run folder of `job_dir`, oldest first."""
    return list(iter_runs(job_dir))


def results_path(job_dir: str | os.PathLike[str], results_file: str) -> Path:
    """A bare name goes in `<job-dir>/results/` (the original's place); a path is the user's
    explicit choice, taken as it resolves."""
    if os.sep in results_file or (os.altsep and os.altsep in results_file):
        return Path(results_file).expanduser().resolve()
    return Path(job_dir) / RESULTS_DIR / results_file


def append_results_line(path: Path, values: list[object]) -> Path:
    """The original conversion.py's CSV line, header written once, never through a symbolic
    link planted at the file. A failed append is undone (no half line is left) and raised as a
    RunStorageError that gives the line to add."""
    line = ",".join(map(str, values)) + "\n"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        with open(fd, "a", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # concurrent runs share this file: one header, lines
            _append(f, line)
    except OSError as e:
        if path.is_symlink():
            raise RunStorageError(f"could not append the results line to {path}: it is a "
                                  "symbolic link (refused: it could point anywhere)",
                                  "remove the link (or pass another --results-file), then add "
                                  f"this line to the file: {line.strip()}") from None
        raise RunStorageError(f"could not append the results line to {path}: "
                              f"{e.strerror or e}", "free disk space (or fix the file), then "
                              f"add this line to it: {line.strip()}") from None
    return path


def _append(f: IO[str], line: str) -> None:
    """Write `line` (after the header in an empty file) and flush; on an error cut the file
    back to where it was, so the other runs' lines stay whole."""
    f.seek(0, os.SEEK_END)
    size = f.tell()
    try:
        f.write((RESULTS_HEADER if size == 0 else "") + line)
        f.flush()
    except OSError:
        with contextlib.suppress(OSError):
            os.ftruncate(f.fileno(), size)
        raise
