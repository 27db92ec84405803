"""Sweep cells fanned out through submitit: processes on this machine, or one Slurm job array.

A job runs `bsnn.pipeline.runner.run(config)` for each of its cells in turn, on the run folders
the record named (bsnn.sweep_record), so `bsnn runs` and the dashboard show them live; this
process submits, waits, and reads every result back from the run folders, never from submitit's
pickles alone (a cell that another process or host ran reads the same).

- local: submitit's LocalExecutor, `parallel` worker processes that claim the cells one at a
  time, each its round-robin share first (bsnn.sweep_worker); a worker gets a
  GPU of its own (CUDA_VISIBLE_DEVICES) when there are GPUs, else its share of the CPU cores as
  torch threads (cores // parallel, at least 1), so cells never oversubscribe them. A process
  per worker, not per cell: a process pays 2-3 s of interpreter and torch import on a 2-core
  machine, more than a small cell's work (benchmarks/bench_sweep.py).
- slurm: submitit's Slurm executor, the whole grid as one job array (a task per cell) whose
  `slurm_array_parallelism` is `parallel`.

A cancel (Ctrl-C while waiting) writes the sweep's cancel marker (cells not started yet see it)
and each started cell's run-folder marker (the runner stops within a batch), cancels the jobs
through the executor, and waits a grace period for the cells to write their ends.
"""

from __future__ import annotations

import contextlib
import glob
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from bsnn.errors import BsnnError, ConfigError, RunStorageError
from bsnn.runfolder import RunFolder
from bsnn.sweep_record import (
    Cell,
    Collected,
    SweepRecord,
    cell_row,
    cell_state,
    cell_summary,
    collect,
)
from bsnn.sweep_worker import claim_order, cpu_share, run_cells

NO_LIMIT_MIN = 30 * 24 * 60  # the local executor kills a job after its time limit (default 2 min)
SLURM_TIME_MIN = 60  # a cell's time limit on Slurm unless --time-limit says otherwise


@dataclass
class LaunchOptions:
    """The launcher's flags: cells at once, and what a Slurm cluster needs."""

    parallel: int | None = None  # local: the GPUs, or 1 on CPU; slurm: every cell at once
    partition: str | None = None
    gpus_per_cell: int = 0
    time_limit_min: int | None = None
    slurm_args: dict[str, str] = field(default_factory=dict)
    grace_s: float = 60.0  # after a cancel: how long the cells get to end by themselves
    poll_s: float = 0.5


class Job(Protocol):
    """What this module uses of a submitit job."""

    @property
    def job_id(self) -> str: ...

    @property
    def state(self) -> str: ...

    def done(self, force_check: bool = False) -> bool: ...

    def cancel(self, check: bool = True) -> None: ...

    @property
    def paths(self) -> Any: ...

    def result(self) -> Any: ...


class Backend(Protocol):
    """A launcher: submits cells as jobs, at most `capacity` cells submitted at once and
    `parallel` running at once."""

    capacity: int
    parallel: int
    note: str | None

    def submit(self, cells: list[Cell]) -> list[Job]: ...

    def release(self, cell: Cell) -> None: ...

    def cancel(self, jobs: list[Job]) -> None: ...


def _submitit() -> Any:
    """submitit (a dependency), imported on first use: the CLI's flags load without it."""
    import submitit

    return submitit


@contextlib.contextmanager
def _spared_from_ctrl_c() -> Iterator[None]:
    """Processes started inside ignore SIGINT. A terminal's Ctrl-C reaches the whole process
    group, and submitit's local controller answers SIGINT by killing its cell a second later,
    in the middle of writing its end; spared, the controller waits while the cell stops by
    itself (run_cell takes SIGINT back as a cancel)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _visible_gpus(device: str) -> list[int]:
    """This machine's GPUs as CUDA_VISIBLE_DEVICES numbers them (none for --device cpu).
    torch (2-3 s to import, this process needs it for nothing else) only where the kernel
    shows a GPU: NVIDIA's device files, ROCm's /dev/kfd or WSL2's /dev/dxg."""
    if device == "cpu" or not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd")
                               or os.path.exists("/dev/dxg")):
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    ids = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")
    count = torch.cuda.device_count()
    if all(i.strip().isdigit() for i in ids) and len(ids) >= count:
        return [int(i) for i in ids[:count]]
    return list(range(count))


class LocalBackend:
    """submitit's LocalExecutor: `parallel` workers sharing the cells, a GPU each where there
    are GPUs. Every cell is submitted at once (its worker's job), and runs when its turn
    comes."""

    def __init__(self, record: SweepRecord, opts: LaunchOptions) -> None:
        self.executor = _submitit().LocalExecutor(folder=record.log_folder)
        self.marker = str(record.cancel_marker)
        self.log_folder = record.log_folder
        self.gpus = _visible_gpus(str(record.cells[0].config.get("device", "auto")))
        wanted = opts.parallel or max(1, len(self.gpus))
        self.parallel = min(wanted, len(self.gpus), len(record.cells)) if self.gpus else \
            min(wanted, len(record.cells))
        self.capacity = len(record.cells)
        self.note = (f"--parallel {wanted} capped at the {len(self.gpus)} GPU(s): one GPU a "
                     "worker" if self.gpus and wanted > len(self.gpus) else None)
        self.threads = cpu_share(self.parallel)
        self.timeout_min = opts.time_limit_min or NO_LIMIT_MIN

    def submit(self, cells: list[Cell]) -> list[Job]:
        """One job a worker, each handed every cell in its claim order (its own share first);
        each cell's job: whichever worker claims it."""
        workers = min(self.parallel, len(cells))
        self.log_folder.mkdir(parents=True, exist_ok=True)
        claims = Path(tempfile.mkdtemp(prefix="claims-", dir=self.log_folder))
        jobs = []
        for w in range(workers):
            order = [cells[i].config for i in claim_order(len(cells), workers, w)]
            params: dict[str, Any] = ({"gpus_per_node": 1, "visible_gpus": (self.gpus[w],)}
                                      if self.gpus else {"gpus_per_node": 0})
            self.executor.update_parameters(timeout_min=self.timeout_min, **params)
            with _spared_from_ctrl_c():
                jobs.append(self.executor.submit(run_cells, order, self.threads, self.marker,
                                                 (str(claims), w)))
        return [ClaimedJob(jobs, claims / c.run_id) for c in cells]

    def release(self, cell: Cell) -> None:
        pass

    def cancel(self, jobs: list[Job]) -> None:
        """Nothing more: the controllers were spared from SIGINT (submitit's local cancel),
        and their cells stop through the markers already written."""


class ClaimedJob:
    """A cell's job among workers that claim cells: the worker that claimed it, and until
    one has, all of them (the cell may still begin while any is running)."""

    def __init__(self, workers: list[Job], claim: Path) -> None:
        self.workers, self.claim = workers, claim

    def _worker(self) -> Job | None:
        try:
            return self.workers[int(self.claim.read_text())]
        except (OSError, ValueError, IndexError):  # not claimed, or being written
            return None

    @property
    def job_id(self) -> str:
        worker = self._worker()
        return str(worker.job_id) if worker else ",".join(str(w.job_id) for w in self.workers)

    @property
    def state(self) -> str:
        worker = self._worker()
        return worker.state if worker else ("DONE" if self.done() else "PENDING")

    def done(self, force_check: bool = False) -> bool:
        worker = self._worker()
        return worker.done(force_check) if worker else all(
            w.done(force_check) for w in self.workers)

    def cancel(self, check: bool = True) -> None:
        claimed = self._worker()
        for worker in [claimed] if claimed else self.workers:
            worker.cancel(check)

    @property
    def paths(self) -> Any:
        return (self._worker() or self.workers[0]).paths

    def result(self) -> Any:
        return (self._worker() or self.workers[0]).result()


class SlurmBackend:
    """submitit's Slurm executor: the grid as one job array."""

    def __init__(self, record: SweepRecord, opts: LaunchOptions) -> None:
        submitit = _submitit()
        try:
            self.executor = submitit.AutoExecutor(folder=record.log_folder, cluster="slurm")
        except RuntimeError as e:
            raise ConfigError(f"--launcher slurm: {e}", "run the sweep on a Slurm login node "
                              "(sbatch, srun, squeue and sacct on PATH), or use --launcher "
                              "local") from None
        self.capacity = len(record.cells)
        self.parallel = parallel = min(opts.parallel or self.capacity, self.capacity)
        self.note = None
        self.marker = str(record.cancel_marker)
        extra = {k.replace("-", "_"): v for k, v in opts.slurm_args.items()}
        try:
            self.executor.update_parameters(
                name=f"bsnn-sweep-{record.sweep_id}", timeout_min=opts.time_limit_min
                or SLURM_TIME_MIN, gpus_per_node=opts.gpus_per_cell, tasks_per_node=1,
                slurm_partition=opts.partition, slurm_array_parallelism=parallel,
                slurm_additional_parameters=extra or None)
        except (ValueError, NameError, AssertionError) as e:
            raise ConfigError(f"submitit refused a Slurm option: {e}",
                              "check --partition, --gpus-per-cell, --time-limit and "
                              "--slurm-arg KEY=VALUE") from None

    def submit(self, cells: list[Cell]) -> list[Job]:
        try:
            with self.executor.batch():
                jobs = [self.executor.submit(run_cells, [c.config], None, self.marker)
                        for c in cells]
        except Exception as e:  # sbatch's refusal, in whatever form submitit raises it
            raise BsnnError(f"sbatch refused the sweep's job array: {e}",
                            "check --partition, --time-limit and --slurm-arg against "
                            "the cluster's limits (sinfo, sacctmgr show qos)") from None
        return jobs

    def release(self, cell: Cell) -> None:
        pass

    def cancel(self, jobs: list[Job]) -> None:
        """scancel: pending cells never start, running ones get SIGTERM (a cancel in run_cell)
        and Slurm's KillWait to write their ends."""
        for job in jobs:
            job.cancel(check=False)


@dataclass
class Outcome:
    """How a launched sweep ended: its table, and on a cancel which cells it stopped."""

    table: Collected
    interrupted: bool = False
    stopped: list[Cell] = field(default_factory=list)  # were running, now cancelled
    not_started: list[Cell] = field(default_factory=list)
    still_running: list[Cell] = field(default_factory=list)  # did not end within the grace


def _job_error(job: Job, cell: Cell) -> str:
    """Why a cell's job ended before its run did: the error run_cells returned for it (a
    model that is not there fails before its run folder exists), else where the job's log
    is."""
    if job.paths.result_pickle.exists():
        with contextlib.suppress(Exception):  # the job raised: its log has the traceback
            said = job.result().get(cell.run_id)
            if isinstance(said, str) and said.startswith("failed: "):
                return said.removeprefix("failed: ")
    return f"its job {job.job_id} ended ({job.state}) before its run did; see {job.paths.stderr}"


class _Cancelled(Exception):
    """The caller's cancel callback said stop."""


class Fleet:
    """The cells of one sweep: waiting to be submitted, running, ended."""

    def __init__(self, record: SweepRecord, backend: Backend, opts: LaunchOptions,
                 on_row: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.record, self.backend, self.opts, self.on_row = record, backend, opts, on_row
        self.todo = list(record.cells)
        self.running: dict[int, tuple[Cell, Job]] = {}

    def run(self, cancel: Callable[[], bool] | None = None) -> None:
        """Submit as capacity allows and reap the cells that ended, until all have."""
        while self.todo or self.running:
            if cancel is not None and cancel():
                raise _Cancelled
            self.fill()
            self.reap()
            if self.todo or self.running:
                time.sleep(self.opts.poll_s)

    def fill(self) -> None:
        room = self.backend.capacity - len(self.running)
        if room <= 0 or not self.todo:
            return
        cells, self.todo = self.todo[:room], self.todo[room:]
        for cell, job in zip(cells, self.backend.submit(cells), strict=True):
            cell.job_id = str(job.job_id)
            self.running[cell.index] = (cell, job)
        self.record.save()

    def reap(self, stopping: bool = False) -> None:
        """Take the cells whose runs ended (or whose jobs did) off the running list. A job
        that ended before its run did is recorded as the cell's error (unless we stopped it
        before it began)."""
        for index, (cell, job) in list(self.running.items()):
            summary = cell_summary(self.record, cell)
            ended = (summary is not None and summary.ended and
                     RunFolder(self.record.run_dir(cell)).exports_final(summary.status))
            if not ended and not job.done():
                continue
            del self.running[index]
            self.backend.release(cell)
            cell.job_id = str(job.job_id)  # a claimed cell's: now its worker's alone
            summary = cell_summary(self.record, cell)
            if not (summary is not None and summary.ended) and not (stopping and summary is None):
                cell.error = _job_error(job, cell)
            self.record.save()
            state = cell_state(self.record, cell, summary)
            if self.on_row is not None and state != "missing":
                self.on_row(cell_row(cell, summary, state))

    def stop(self) -> Outcome:
        """Cancel every started cell (markers, then the executor), give them the grace period
        to write their ends, and say what became of each."""
        with contextlib.suppress(OSError):  # the run folders' markers still stop them
            self.record.cancel_marker.touch()
        started = [cell for cell, _ in self.running.values()]
        for cell in started:
            folder = self.record.run_dir(cell)
            if folder.is_dir():
                with contextlib.suppress(RunStorageError):
                    RunFolder(folder).request_cancel()
        self.backend.cancel([job for _, job in self.running.values()])
        deadline = time.monotonic() + self.opts.grace_s
        while self.running and time.monotonic() < deadline:
            time.sleep(self.opts.poll_s)
            self.reap(stopping=True)
        table = collect(self.record)
        stopped = [c for c in started if c in table.cancelled]
        never = self.todo + [c for c in started if cell_summary(self.record, c) is None]
        return Outcome(table, True, stopped, never,
                       [cell for cell, _ in self.running.values()])


def launch(record: SweepRecord, opts: LaunchOptions,
           on_row: Callable[[dict[str, Any]], None] | None = None,
           cancel: Callable[[], bool] | None = None,
           on_note: Callable[[str], None] | None = None) -> Outcome:
    """Run the record's cells through its launcher (local or slurm) and wait for them; Ctrl-C
    (or `cancel()`) while waiting cancels the cells started. The table is rebuilt from the
    run folders at the end."""
    backends: dict[str, Callable[[SweepRecord, LaunchOptions], Backend]] = {
        "local": LocalBackend, "slurm": SlurmBackend}
    if record.launcher not in backends:
        raise ConfigError(f"launcher {record.launcher!r} does not launch processes",
                          "use local or slurm (inline runs in this process)")
    backend = backends[record.launcher](record, opts)
    if backend.note and on_note is not None:
        on_note(backend.note)
    record.parallel = backend.parallel
    record.save()
    fleet = Fleet(record, backend, opts, on_row)
    try:
        fleet.run(cancel)
    except (KeyboardInterrupt, _Cancelled):
        return fleet.stop()
    return Outcome(collect(record))
