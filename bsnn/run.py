"""One run: load, calibrate, convert, simulate — as a stream of events.

`run(config, emit, cancel)` is the only entry point the CLI, the dashboard and detached runs
use. Every event goes to `<job-dir>/<run-id>/events.jsonl` as it happens (flushed), and to
`emit`; `cancel()` is checked at least once per batch. Whatever happens, the export files are
written from the events so far, so a failure or a cancel keeps what was done.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from bsnn.config import RunConfig
from bsnn.distributed import World, backend_for, init_from_env, local_device, shutdown, world
from bsnn.errors import BsnnError, ConfigError, DataError, DeviceError, RunStorageError
from bsnn.events import EVENTS_FILE, Emit, Event, EventLog, make_event
from bsnn.report import summarize, write_exports

RESULTS_HEADER = "seed,simulation time,batch size,inference time,accuracy\n"


class Cancelled(Exception):
    """Raised inside a run when `cancel()` turns true; the run ends as `cancelled`."""


def resolve_device(name: str) -> torch.device:
    """auto -> CUDA when present, else CPU; an explicit CUDA device must exist."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name} was asked for, but torch sees no CUDA device",
                              "run with --device cpu (or auto), or fix the CUDA install")
        index = int(name.split(":")[1]) if ":" in name else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"{name} does not exist ({torch.cuda.device_count()} CUDA devices)",
                              f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return torch.device(name)


def new_run_dir(job_dir: str | os.PathLike[str], run_id: str | None = None) -> Path:
    """A fresh folder under the job dir; unique even for runs started in the same second."""
    root = Path(job_dir)
    try:
        root.mkdir(parents=True, exist_ok=True)
        for _ in range(100):
            rid = run_id or f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
            try:
                (root / rid).mkdir()
                return root / rid
            except FileExistsError:
                if run_id:
                    raise RunStorageError(f"run {run_id} already exists in {root}",
                                          "pick another --run-id") from None
    except OSError as e:
        raise RunStorageError(f"cannot create a run folder in {root}: {e.strerror}",
                              "choose a writable --job-dir") from None
    raise RunStorageError(f"could not find a free run id in {root}", "retry")


def append_results_line(config: RunConfig, seconds: float, accuracy_pct: float) -> Path:
    """The original conversion.py's CSV line, header written once."""
    path = Path(config.job_dir) / "results" / config.results_file
    path.parent.mkdir(parents=True, exist_ok=True)
    line = ",".join(map(str, [config.seed, config.time, config.batch_size, seconds,
                              accuracy_pct])) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # concurrent runs share this file: one header, whole lines
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            f.write(RESULTS_HEADER)
        f.write(line)
    return path


def _versions() -> dict[str, str]:
    from bsnn.checkpoint import versions

    return versions()


_IDLE, _DONE, _FAILED = 0, 1, 2  # the state of a rank's row in one round of the simulation


class _NullLog:
    """The event log of ranks other than 0: under torchrun rank 0 alone writes the run folder."""

    def __call__(self, event: Event) -> None:
        pass

    def close(self) -> None:
        pass


class _Run:
    """The state of one run; `execute` is the sequence of phases."""

    def __init__(self, config: RunConfig, emit: Emit | None,
                 cancel: Callable[[], bool] | None) -> None:
        self.config = config
        self.emit = emit
        self.cancel = cancel or (lambda: False)
        self.events: list[Event] = []
        self.images = 0
        self.world: World = world()
        self.dist_created = False  # whether this run joined torchrun's group (and leaves it)
        if self.world.main:
            self.run_dir = new_run_dir(config.job_dir, config.run_id)
            self.log: EventLog | _NullLog = EventLog(self.run_dir / EVENTS_FILE)
        else:  # never created: rank 0 writes the folder, events, exports and results line
            self.run_dir = Path(config.job_dir) / f"{config.run_id or 'run'}.rank{self.world.rank}"
            self.log = _NullLog()

    def send(self, kind: str, **fields: Any) -> None:
        event = make_event(kind, **fields)
        self.events.append(event)
        self.log(event)
        if self.emit is not None and self.world.main:
            self.emit(event)

    def check_cancel(self) -> None:
        # Under torchrun a cancel is agreed at the simulation's batch boundaries (a rank that
        # stopped alone would leave the others waiting in a collective).
        if not self.world.distributed and self.cancel():
            raise Cancelled

    def execute(self) -> None:
        from bsnn.checkpoint import has_meta, load_model, read_checkpoint
        from bsnn.convert import convert
        from bsnn.data import calibration_subset, eval_subset, load_split
        from bsnn.models import DEFAULT_ARCH

        c = self.config
        torch.manual_seed(c.seed)
        device = local_device(resolve_device(c.device), self.world)
        extra = {"distributed": {"world_size": self.world.size,
                                 "backend": backend_for(device)}} if self.world.distributed else {}
        self.send("started", run_id=self.run_dir.name, run_dir=str(self.run_dir),
                  config=c.to_dict(), device=str(device), versions=_versions(),
                  pid=os.getpid(), host=socket.gethostname(), **extra)
        self.dist_created = init_from_env(device)

        self.send("phase", name="load_model", message=f"loading {c.model}")
        raw = read_checkpoint(c.model)
        ours = has_meta(raw)
        dataset = c.dataset or (raw["meta"]["dataset"] if ours else "cifar100")

        self.send("phase", name="load_data", message=f"loading {dataset}")
        split_kw = {"val_split": c.val_split, "seed": c.seed, "image_size": c.image_size}
        train_set, info = load_split(dataset, "train", c.data, **split_kw)
        val_set, _ = load_split(dataset, "val", c.data, **split_kw)
        model, meta = load_model(
            c.model, raw=raw, dataset=c.dataset, num_classes=None if ours else info.num_classes,
            arch=c.arch or (None if ours else DEFAULT_ARCH.get(dataset, "vgg15ab")),
            input_shape=info.input_shape,
        )
        if meta.num_classes != info.num_classes:
            raise DataError(f"the model has {meta.num_classes} classes, {dataset} has "
                            f"{info.num_classes}", "pick the data set the model was trained on")
        if tuple(meta.input_shape) != tuple(info.input_shape):
            raise DataError(f"the model takes {tuple(meta.input_shape)} images, {dataset} gives "
                            f"{tuple(info.input_shape)}", "pick the matching data set or "
                            "--image-size")
        if len(val_set) == 0:
            raise DataError(f"the {dataset} evaluation split is empty", "check --data")
        if c.eval_size > len(val_set):
            self.send("warning", message=f"eval size {c.eval_size} is larger than the "
                      f"{len(val_set)} images of {dataset}; using all of them")
        eval_set = eval_subset(val_set, c.eval_size)
        model = model.to(device)

        self.send("phase", name="calibrate",
                  message=f"{c.percentile}th percentile over {min(c.norm, len(train_set))} "
                  "training images")
        calib = calibration_subset(train_set, c.norm, seed=c.seed)
        workers = self._workers(dataset, device)

        def calib_batches() -> Iterator[torch.Tensor]:
            for x, _ in self._loader(calib, workers, device):
                self.check_cancel()
                yield x.to(device, non_blocking=True)

        conversion = convert(model, calib_batches, c.percentile, c.threshold_granularity,
                             c.binary_weights)
        net = conversion.network
        for message in conversion.warnings:
            self.send("warning", message=message)
        self.send("thresholds", layers=[d for d in net.describe()], percentile=c.percentile,
                  granularity=c.threshold_granularity)
        del model
        if c.snn_calibration != "none":
            self._correct(conversion, train_set, workers, device)

        self.send("phase", name="simulate",
                  message=f"{len(eval_set)} images x {c.time} steps on {device}")
        self._simulate(conversion, eval_set, workers, device)

    def _correct(self, conversion, train_set, workers: int,  # type: ignore[no-untyped-def]
                 device: torch.device) -> None:
        """Li et al.'s SNN calibration on random training images (bsnn.convert.correction)."""
        from bsnn.convert.correction import correct_errors
        from bsnn.data import calibration_subset
        from bsnn.snn.engine import SimOptions

        c = self.config
        images = calibration_subset(train_set, c.snn_calibration_size, seed=c.seed + 1)
        self.send("phase", name="snn_calibration",
                  message=f"{c.snn_calibration} calibration on {len(images)} training images")

        def batches() -> Iterator[torch.Tensor]:
            for x, _ in self._loader(images, workers, device):
                self.check_cancel()
                yield x.to(device, non_blocking=True)

        options = SimOptions(time=c.time, propagation=c.propagation, reset=c.reset, v0=c.v0,
                             encoding=c.encoding, seed=c.seed)
        errors = correct_errors(conversion.network, conversion.ann, batches, options,
                                c.snn_calibration)
        names = [layer.name for layer in conversion.network.spiking]
        self.send("snn_calibration", mode=c.snn_calibration, images=len(images),
                  error_before=dict(zip(names, errors, strict=True)))

    def _workers(self, dataset: str, device: torch.device) -> int:
        if dataset == "digits":  # held in memory: worker processes would only add overhead
            return 0
        wanted = self.config.n_workers
        if wanted == -1:
            wanted = 4 * max(1, torch.cuda.device_count()) if device.type == "cuda" else 4
        return min(wanted, os.cpu_count() or 1)  # more loader processes than cores only thrash

    def _loader(self, dataset, workers: int, device: torch.device):  # type: ignore[no-untyped-def]
        from bsnn.data import make_loader

        return make_loader(dataset, self.config.batch_size, n_workers=workers,
                           pin_memory=device.type == "cuda", seed=self.config.seed)

    def _simulate(self, conversion, eval_set, workers: int,  # type: ignore[no-untyped-def]
                  device: torch.device) -> None:
        from torch.utils.data import Subset

        from bsnn.convert import chain_forward
        from bsnn.distributed import (
            RankFailed,
            broadcast_thresholds,
            gather_objects,
            gather_rows,
            rounds,
            shard_batches,
        )
        from bsnn.snn.engine import Engine, SimOptions

        c = self.config
        net = conversion.network
        broadcast_thresholds(net, conversion.ann)  # every rank simulates rank 0's network
        options = SimOptions(time=c.time, propagation=c.propagation, reset=c.reset, v0=c.v0,
                             encoding=c.encoding, seed=c.seed, readout_delay=c.readout_delay)
        if c.backend == "bindsnet":
            from bsnn.backends.bindsnet import BindsnetBackend

            engine = BindsnetBackend(net, options)
        else:
            engine = Engine(net, options)
        names = [layer.name for layer in net.spiking]
        n, steps = len(names), c.time
        # One batch's counters travel as one float64 row (exact for these integer counts):
        # state, images, ANN correct | correct per step | spikes | synops | ANN activation.
        sizes = [1, 1, 1, steps, n * steps, n * steps, n]
        correct = torch.zeros(steps, dtype=torch.long)
        spikes = torch.zeros(n, steps, dtype=torch.float64)
        synops = torch.zeros_like(spikes)
        activation = torch.zeros(n, dtype=torch.float64)
        ann_correct = 0

        def simulate(x: torch.Tensor, y: torch.Tensor, batch: int) -> torch.Tensor:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.no_grad():
                out, acts = chain_forward(conversion.ann, x, keep=True)
            counts = engine.run_batch(x, y, batch)
            head = torch.tensor([_DONE, len(y)], dtype=torch.float64, device=device)
            return torch.cat([head, (out.argmax(1) == y).sum(dtype=torch.float64)[None],
                              counts.correct.double(), counts.spikes.flatten(),
                              counts.synops.flatten(),
                              torch.stack([a.sum(dtype=torch.float64) for a in acts])])

        # Under torchrun rank r simulates global batches r, r+N, ... of the 1-process order;
        # each round every rank contributes one row (_IDLE when it has no batch left) and rank 0
        # adds them in global batch order, so counters and events equal a 1-process run's.
        w = self.world
        total = len(eval_set)
        shard = shard_batches(total, c.batch_size, w.rank, w.size)
        mine = Subset(eval_set, [i for _, r in shard for i in r]) if w.distributed else eval_set
        batches = iter(self._loader(mine, workers, device))
        done = [0] * w.size  # images per rank so far, for the `ranks` field
        start = time.perf_counter()
        for k in range(rounds(total, c.batch_size, w.size)):
            self.check_cancel()
            row = torch.zeros(sum(sizes), dtype=torch.float64, device=device)
            error: Exception | None = None
            if k < len(shard):
                try:
                    row = simulate(*next(batches), shard[k][0])
                except Exception as e:
                    if not w.distributed:
                        raise
                    error, row[0] = e, _FAILED
            cancelled = w.distributed and self.cancel()
            rows = gather_rows(torch.cat([row, row.new_tensor([cancelled])])).cpu()
            for r in range(w.size):
                state, images, ann, corr, spk, syn, act = rows[r, :-1].split(sizes)
                if state != _DONE:
                    continue
                correct += corr.long()
                spikes += spk.view(n, steps)
                synops += syn.view(n, steps)
                activation += act
                ann_correct += int(ann)
                self.images += int(images)
                done[r] += int(images)
                self.send(
                    "batch_done", batch=k * w.size + r, images=self.images, images_total=total,
                    correct_per_step=correct.tolist(), ann_correct=ann_correct,
                    spikes=dict(zip(names, spikes.tolist(), strict=True)),
                    synops=dict(zip(names, synops.tolist(), strict=True)),
                    ann_activation=dict(zip(names, activation.tolist(), strict=True)),
                    elapsed_s=time.perf_counter() - start,
                    **({"ranks": list(done)} if w.distributed else {}),
                )
            failed = (rows[:, 0] == _FAILED).nonzero().flatten().tolist()
            if failed:  # every rank learns it at the same boundary: none is left waiting
                notes = gather_objects(None if error is None else
                                       f"{type(error).__name__}: {error}")
                if error is not None:
                    raise error  # this rank's own error, handled as in one process
                r = failed[0]
                raise RankFailed(
                    f"rank {r} of {w.size} failed at batch {k * w.size + r}: {notes[r]}",
                    f"rank {r}'s traceback is in its output (torchrun prints it); the other "
                    "ranks stopped at the same batch boundary")
            if rows[:, -1].any():
                raise Cancelled
        self.sim_seconds = time.perf_counter() - start

    def finish(self) -> dict[str, Any]:
        """Exports from the events so far; never raises over the run's own outcome."""
        try:
            if self.world.main:
                write_exports(self.run_dir, self.events)
        except OSError as e:
            self.send("warning", message=f"could not write the export files: {e}")
        finally:
            self.log.close()
            shutdown(self.dist_created)
        return summarize(self.events)


def run(config: RunConfig, emit: Emit | None = None,
        cancel: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run `config`; return the summary (see bsnn.report.summarize).

    Raises BsnnError (after emitting `failed`) on bad input; returns normally when cancelled.
    """
    config.validate()
    state = _Run(config, emit, cancel)
    try:
        state.execute()
        summary = summarize(state.events)
        state.send("finished", images=state.images, wall_time_s=state.sim_seconds,
                   final_accuracy=summary["final_accuracy"])
        if summary["final_accuracy"] is not None and state.world.main:
            append_results_line(config, state.sim_seconds, 100 * summary["final_accuracy"])
    except Cancelled:
        state.send("cancelled", images=state.images)
    except torch.cuda.OutOfMemoryError:
        err = DeviceError(f"CUDA ran out of memory at batch size {config.batch_size}",
                          f"pass a smaller --batch-size, e.g. {max(1, config.batch_size // 2)}")
        state.send("failed", error="DeviceError", message=err.message, fix=err.fix,
                   images=state.images)
        state.finish()
        raise err from None
    except BsnnError as err:
        state.send("failed", error=type(err).__name__, message=err.message, fix=err.fix,
                   images=state.images)
        state.finish()
        raise
    except Exception as err:
        if state.world.main:  # other ranks print theirs (torchrun collects it)
            (state.run_dir / "traceback.txt").write_text(traceback.format_exc())
        state.send("failed", error=type(err).__name__, message=str(err),
                   fix=f"unexpected; the traceback is in {state.run_dir / 'traceback.txt'}",
                   images=state.images)
        state.finish()
        raise
    return state.finish()


__all__ = ["ConfigError", "RunConfig", "resolve_device", "run"]
