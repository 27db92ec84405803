"""A sweep's own record, and its table rebuilt from the cells' run folders.

Every cell's run id is decided before anything runs (`<sweep-id>-<index>`), so the sweep knows
its folders before they exist, and `<job-dir>/sweep-<id>.json` names them with their configs,
variants, job ids and the submitit log folder. Whoever reads the record later (`bsnn sweep
--collect`, the same command run again) rebuilds the table from the run folders alone: a cell's
result is its folder's summary, whatever process or host ran it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bsnn.config import RunConfig
from bsnn.errors import RunStorageError
from bsnn.events import Started
from bsnn.runfolder import RunFolder, atomic_write, new_run_id, run_dir_for
from bsnn.runlog import EVENTS_FILE
from bsnn.summary import Summary
from bsnn.sweep import Variant, plot, row, to_csv, to_markdown

LAUNCHERS = ("inline", "local", "slurm")
RECORD_VERSION = 1


@dataclass
class Cell:
    """One run of the grid: its run id, variant and config, and the job that runs it."""

    index: int
    run_id: str
    variant: str
    switches: dict[str, Any]
    config: dict[str, Any]
    job_id: str | None = None
    error: str | None = None  # its job ended without ending the run (what the executor said)

    def label(self) -> str:
        """The cell in words, for lists of missing and failed cells."""
        model = str(self.config.get("model", "?")).removeprefix("bundled:")
        return (f"{self.run_id} ({Path(model).name} p={self.config.get('percentile')} "
                f"{self.variant})")


@dataclass
class SweepRecord:
    """`sweep-<id>.json`: what a sweep started and where its cells write."""

    sweep_id: str
    job_dir: str
    launcher: str
    parallel: int
    cells: list[Cell]
    created: float = field(default_factory=time.time)
    options: dict[str, Any] = field(default_factory=dict)  # the launcher's flags, as given
    version: int = RECORD_VERSION

    @property
    def stem(self) -> Path:
        return Path(self.job_dir) / f"sweep-{self.sweep_id}"

    @property
    def path(self) -> Path:
        return self.stem.with_suffix(".json")

    @property
    def log_folder(self) -> Path:
        """submitit's pickles and each job's stdout / stderr."""
        return self.stem.with_suffix(".submitit")

    @property
    def cancel_marker(self) -> Path:
        """Every cell of the sweep stops when this file appears (also one not started yet)."""
        return Path(self.job_dir) / f".sweep-{self.sweep_id}.cancel"

    def run_dir(self, cell: Cell) -> Path:
        return run_dir_for(self.job_dir, cell.run_id)

    def save(self) -> Path:
        """Write the record atomically (a reader never sees half of it)."""
        data = asdict(self)
        data["log_folder"] = str(self.log_folder)
        text = json.dumps(data, indent=1, default=str).encode()
        try:
            Path(self.job_dir).mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, lambda f: f.write(text))
        except OSError as e:
            raise RunStorageError(f"cannot write the sweep record {self.path}: {e.strerror}",
                                  "choose a writable --job-dir") from None
        return self.path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SweepRecord:
        """A record from its file; its job dir is the folder it lies in (so a moved job dir
        still collects)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            cells = [Cell(**c) for c in data["cells"]]
            return cls(sweep_id=data["sweep_id"], job_dir=str(path.parent.absolute()),
                       launcher=data["launcher"], parallel=data["parallel"], cells=cells,
                       created=data.get("created", 0.0), options=data.get("options", {}))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RunStorageError(f"{path} is not a sweep record ({type(e).__name__}: {e})",
                                  "pass the sweep-<id>.json that `bsnn sweep` wrote in its "
                                  "job dir") from None


def plan(cells: list[tuple[Variant, RunConfig]], job_dir: str | os.PathLike[str],
         launcher: str, parallel: int = 1, options: dict[str, Any] | None = None) -> SweepRecord:
    """The record of a new sweep: a sweep id, and a run id per cell decided now."""
    sweep_id = new_run_id()
    job = str(Path(job_dir).absolute())
    width = len(str(max(len(cells) - 1, 0)))
    planned = []
    for i, (variant, config) in enumerate(cells):
        run_id = f"{sweep_id}-{i:0{width}d}"
        c = replace(config, job_dir=job, run_id=run_id)
        planned.append(Cell(i, run_id, variant.name, dict(variant.switches), _plain(c)))
    return SweepRecord(sweep_id, job, launcher, parallel, planned, options=options or {})


def _plain(config: RunConfig) -> dict[str, Any]:
    """The config as its JSON reads back (tuples as lists), so records compare equal."""
    return json.loads(json.dumps(config.to_dict(), default=str))


def find(cells: list[tuple[Variant, RunConfig]],
         job_dir: str | os.PathLike[str]) -> SweepRecord | None:
    """The newest record in `job_dir` of this very grid (same variants, same configs but the
    run ids), so that running the same command again collects instead of starting over."""
    job = str(Path(job_dir).absolute())
    wanted = [(v.name, _plain(replace(c, job_dir=job, run_id=None))) for v, c in cells]
    for path in sorted(Path(job_dir).glob("sweep-*.json"), reverse=True):
        try:
            record = SweepRecord.load(path)
        except RunStorageError:
            continue
        have = [(c.variant, {**c.config, "run_id": None}) for c in record.cells]
        if have == wanted:
            return record
    return None


@dataclass
class Collected:
    """The table of a sweep so far, and the cells that are not (or not well) in it."""

    rows: list[dict[str, Any]]
    csv: Path | None
    missing: list[Cell]  # not ended: not started yet, or still running
    failed: list[Cell]  # failed, or their process died without ending the run
    cancelled: list[Cell]

    @property
    def complete(self) -> bool:
        return not (self.missing or self.failed or self.cancelled)


def cell_summary(record: SweepRecord, cell: Cell) -> Summary | None:
    """The cell's summary from its run folder; None while the folder has no events."""
    folder = RunFolder(record.run_dir(cell))
    return folder.summary() if (folder.path / EVENTS_FILE).is_file() else None


def cell_state(record: SweepRecord, cell: Cell, summary: Summary | None) -> str:
    """finished, failed, cancelled, or missing (not started, or running). A run whose process
    died without its end is failed; one started on another host that looks dead from here
    may still run there, so it stays missing."""
    if summary is not None and summary.ended:
        return summary.status
    if cell.error:  # its job ended, the run had not
        return "failed"
    if summary is not None and summary.status == "interrupted" and _here(record, cell):
        return "failed"
    return "missing"


def _here(record: SweepRecord, cell: Cell) -> bool:
    """Whether the cell's run was started on this host (its liveness is knowable here)."""
    events = RunFolder(record.run_dir(cell)).events()
    started = next((e for e in events if isinstance(e, Started)), None)
    return started is not None and started.host in (None, socket.gethostname())


def cell_row(cell: Cell, summary: Summary | None, state: str) -> dict[str, Any]:
    """The cell's line of the table; a cell that failed before its run began still gets one."""
    if summary is None:
        summary = Summary(run_id=cell.run_id, status=state, config=cell.config)
    elif summary.status != state:  # a dead process's run: failed, whatever the log says
        summary = replace(summary, status=state)
    return row(Variant(cell.variant, cell.switches), summary)


def collect(record: SweepRecord, with_plot: bool = True) -> Collected:
    """Rebuild the table (CSV, Markdown and, with `with_plot`, the PNG) from the cells' run
    folders: finished, failed and cancelled cells each have a row, in the grid's order."""
    rows, curves = [], []
    out = Collected([], None, [], [], [])
    for cell in record.cells:
        summary = cell_summary(record, cell)
        state = cell_state(record, cell, summary)
        if state == "missing":
            out.missing.append(cell)
            continue
        if state != "finished":
            (out.cancelled if state == "cancelled" else out.failed).append(cell)
        rows.append(cell_row(cell, summary, state))
        if summary is not None and summary.accuracy_per_step:
            model = Path(str(cell.config["model"])).stem
            curves.append((f"{model} p={cell.config['percentile']} {cell.variant}", summary))
    out.rows = rows
    if rows:
        out.csv = write_table(record.stem, rows, curves if with_plot else None)
    return out


def write_table(stem: Path, rows: list[dict[str, Any]],
                curves: list[tuple[str, Summary]] | None) -> Path:
    """`<stem>.csv` and `.md`, and `.png` when there are curves to draw; the CSV's path."""
    try:
        stem.with_suffix(".csv").write_text(to_csv(rows))
        stem.with_suffix(".md").write_text(to_markdown(rows))
        if curves:
            plot(curves, stem.with_suffix(".png"))
    except OSError as e:
        raise RunStorageError(f"cannot write the sweep table {stem}.csv: {e.strerror}",
                              "free disk space or fix the job dir's permissions, then run "
                              f"`bsnn sweep --collect {stem}.json`") from None
    return stem.with_suffix(".csv")
