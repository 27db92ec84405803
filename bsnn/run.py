"""One run: load, calibrate thresholds, convert, simulate — as a stream of events.

`run(config, emit, cancel)` is the only entry point the CLI, the dashboard and detached runs
use. Every event goes to `<job-dir>/<run-id>/events.jsonl` as it happens (flushed), and to
`emit`; `cancel()` is checked at least once per batch. Whatever happens, the export files are
written from the events so far, so a failure or a cancel keeps what was done; a file that
cannot be written makes the run fail, never a silent success. The parts live
elsewhere: folders in `bsnn.rundir`, devices in `bsnn.devices`, the simulation phase (and the
merge of torchrun ranks' counters) in `bsnn.simulation`.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import os
import socket
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bsnn.checkpoint import (
    ModelMeta,
    has_meta,
    load_model,
    read_checkpoint,
    resolve_model_path,
    versions,
)
from bsnn.config import RunConfig
from bsnn.conversion import Conversion, convert
from bsnn.conversion.synapses import layer_macs
from bsnn.data import (
    CHANNELS,
    DEFAULT_DATA_DIR,
    DatasetInfo,
    calibration_subset,
    eval_subset,
    load_split,
    make_loader,
    normalization,
)
from bsnn.devices import loader_workers, resolve_device
from bsnn.distributed import World, backend_for, init_from_env, local_device, shutdown, world
from bsnn.errors import BsnnError, DataError, DeviceError
from bsnn.events import (
    EVENTS_FILE,
    BatchDone,
    Cancelled,
    Emit,
    Event,
    EventLog,
    Failed,
    Finished,
    Phase,
    Progress,
    Resolved,
    RunWarning,
    SnnCalibration,
    Started,
    Thresholds,
    keep,
)
from bsnn.models import DEFAULT_ARCH
from bsnn.options import sim_options_kwargs
from bsnn.report import end_run, summarize
from bsnn.rundir import append_results_line, new_run_dir
from bsnn.simulation import CancelRequested, Simulation
from bsnn.snn.options import SimOptions


@dataclass
class Inputs:
    """What the load phases produce: the ANN on its device and the data it is judged on."""

    model: torch.nn.Module
    dataset: str
    train_set: Any
    eval_set: Any


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
        self.sim_seconds = 0.0
        self.world: World = world()
        self.dist_created = False  # whether this run joined torchrun's group (and leaves it)
        self.device = torch.device("cpu")
        self.workers = 0
        if self.world.main:
            self.run_dir = new_run_dir(config.job_dir, config.run_id)
            self.log: EventLog | _NullLog = EventLog(self.run_dir / EVENTS_FILE)
        else:  # never created: rank 0 writes the folder, events, exports and results line
            self.run_dir = Path(config.job_dir) / f"{config.run_id or 'run'}.rank{self.world.rank}"
            self.log = _NullLog()

    def send(self, event: Event) -> None:
        """Keep, log and emit `event`; a log that cannot be written raises RunStorageError
        after the event is emitted, so the consumers still see it."""
        keep(self.events, event)
        try:
            self.log(event)
        finally:
            if self.emit is not None and self.world.main:
                self.emit(event)

    def check_cancel(self) -> None:
        # Under torchrun a cancel is agreed at the simulation's batch boundaries (a rank that
        # stopped alone would leave the others waiting in a collective).
        if not self.world.distributed and self.cancel():
            raise CancelRequested

    def execute(self) -> None:
        c = self.config
        torch.manual_seed(c.seed)
        self._start()
        inputs = self._load()
        conversion = self._calibrate_thresholds(inputs)
        if c.snn_calibration != "none":
            conversion = self._snn_calibration(conversion, inputs.train_set)
        self.send(Phase(name="simulate", message=f"{len(inputs.eval_set)} images x {c.time} "
                        f"steps on {self.device}"))
        self.sim_seconds = Simulation(
            conversion, self._sim_options(), c.backend, self.world, self.device, self._count,
            self.cancel, self._loader, c.batch_size).run(inputs.eval_set)

    def _start(self) -> None:
        self.device = local_device(resolve_device(self.config.device), self.world)
        group = ({"world_size": self.world.size, "backend": backend_for(self.device)}
                 if self.world.distributed else None)
        self.send(Started(run_id=self.run_dir.name, run_dir=str(self.run_dir),
                          config=self.config.to_dict(), device=str(self.device),
                          versions=versions(), pid=os.getpid(), host=socket.gethostname(),
                          distributed=group))
        self.dist_created = init_from_env(self.device)

    def _load(self) -> Inputs:
        """The model and the data set it is judged on, checked against each other. The images
        are normalised as --normalize says, else as the checkpoint's training was."""
        c = self.config
        self.send(Phase(name="load_model", message=f"loading {c.model}"))
        raw = read_checkpoint(c.model)
        ours = has_meta(raw)
        dataset = c.dataset or (raw["meta"]["dataset"] if ours else "cifar100")
        trained = _trained_stats(raw, dataset)
        mean, std = normalization(dataset, c.normalize or trained)
        self.send(Phase(name="load_data", message=f"loading {dataset} (mean {list(mean)}, "
                        f"std {list(std)})"))
        split_kw = {"val_split": c.val_split, "seed": c.seed, "image_size": c.image_size,
                    "normalize": (mean, std)}
        train_set, info = load_split(dataset, "train", c.data, **split_kw)
        val_set, _ = load_split(dataset, "val", c.data, **split_kw)
        model, meta = load_model(
            c.model, raw=raw, dataset=c.dataset, num_classes=None if ours else info.num_classes,
            arch=c.arch or (None if ours else DEFAULT_ARCH.get(dataset, "vgg15ab")),
            input_shape=info.input_shape, width=c.width,
        )
        check_fits(meta, info)
        if self.world.main:  # the one record of what ran (hashing the file once, on rank 0)
            stats_from = (f"--normalize {c.normalize}" if c.normalize else
                          "from checkpoint" if trained else f"{dataset}'s own")
            self.send(resolved_record(c.model, meta, info, data_source(dataset, c.data),
                                      self.device, _origins(c, ours, dataset, self.device,
                                                            stats_from)))
        if len(val_set) == 0:
            raise DataError(f"the {dataset} evaluation split is empty", "check --data")
        if c.eval_size > len(val_set):
            self.send(RunWarning(message=f"eval size {c.eval_size} is larger than the "
                                 f"{len(val_set)} images of {dataset}; using all of them"))
        self.workers = loader_workers(c.n_workers, dataset, self.device, self.world.size)
        return Inputs(model.to(self.device), dataset, train_set, eval_subset(val_set, c.eval_size))

    def _calibrate_thresholds(self, inputs: Inputs) -> Conversion:
        """The paper's threshold balancing: a percentile of each layer's ANN activations over
        training images sets its threshold."""
        c = self.config
        images = min(c.norm, len(inputs.train_set))
        self.send(Phase(name="threshold_calibration",
                        message=f"{c.percentile}th percentile over {images} training images"))
        calib = calibration_subset(inputs.train_set, c.norm, seed=c.seed)

        def progress(passes: int, done: int, total: int) -> None:
            self.send(Progress(phase="threshold_calibration", done=done, total=total,
                               message=f"pass {passes} over {images} images: {done} of "
                               f"{total} layers' percentiles exact"))

        conversion = convert(inputs.model, lambda: self._batches(calib), c.percentile,
                             c.threshold_granularity, c.binary_weights, progress=progress)
        for event in conversion_events(conversion, c.percentile, c.threshold_granularity):
            self.send(event)
        return conversion

    def _snn_calibration(self, conversion: Conversion, train_set: Any) -> Conversion:
        """Li et al.'s SNN calibration on random training images."""
        c = self.config
        images = calibration_subset(train_set, c.snn_calibration_size, seed=c.seed + 1)
        self.send(Phase(name="snn_calibration",
                        message=f"{c.snn_calibration} calibration on {len(images)} training "
                        "images"))
        calibrated, event = snn_calibrated(conversion, lambda: self._batches(images), len(images),
                                           self._sim_options(readout_delay=0), c.snn_calibration)
        self.send(event)
        return calibrated

    def _sim_options(self, **override: Any) -> SimOptions:
        return SimOptions(**(sim_options_kwargs(self.config) | override))

    def _batches(self, images: Any) -> Iterator[torch.Tensor]:
        """Calibration batches on the device, checking for a cancel before each."""
        for x, _ in self._loader(images):
            self.check_cancel()
            yield x.to(self.device, non_blocking=True)

    def _loader(self, dataset: Any) -> Any:
        return make_loader(dataset, self.config.batch_size, n_workers=self.workers,
                           pin_memory=self.device.type == "cuda", seed=self.config.seed)

    def _count(self, event: BatchDone) -> None:
        """A BatchDone from the simulation: sent, and its images kept for the last events."""
        self.images = event.images
        self.send(event)

    def end(self, last: Event, before: Callable[[], object] | None = None) -> None:
        """Write the run's files, then log `last` (bsnn.report.end_run); RunStorageError when a
        write failed and the run, recorded as failed, had not failed already."""
        error = None
        try:
            if self.world.main:
                error = end_run(self.run_dir, self.events, last, self.send, before)
            else:
                self.send(last)
        finally:
            self.log.close()
            shutdown(self.dist_created)
        if error is not None:
            raise error

    def fail(self, error: str, message: str, fix: str) -> None:
        """The `failed` event after the exports; the caller re-raises its own error."""
        self.end(Failed(error=error, message=message, fix=fix, images=self.images))


def check_fits(meta: ModelMeta, info: DatasetInfo) -> None:
    """DataError unless the model takes the data set's images and has its class count."""
    dataset = info.name
    if meta.num_classes != info.num_classes:
        raise DataError(f"the model has {meta.num_classes} classes, {dataset} has "
                        f"{info.num_classes}", "pick the data set the model was trained on")
    if tuple(meta.input_shape) != tuple(info.input_shape):
        raise DataError(f"the model takes {tuple(meta.input_shape)} images, {dataset} gives "
                        f"{tuple(info.input_shape)}", "pick the matching data set or "
                        "--image-size")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The checkpoint's SHA-256: months later it tells which weights a run used."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def data_source(dataset: str, data: str | os.PathLike[str] | None) -> str:
    """Where a data set's images are read from (bsnn.data.load_split's rule): an absolute
    folder, or the bundled digits."""
    if dataset == "digits":
        return "sklearn:load_digits"
    root = DEFAULT_DATA_DIR if data is None and dataset.startswith("cifar") else Path(data or ".")
    return str(root.expanduser().absolute())


def device_name(device: torch.device) -> str:
    """The accelerator's name (e.g. NVIDIA H200); empty on CPU."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else ""


def resolved_record(model: str, meta: ModelMeta | None, info: DatasetInfo | None,
                    data_path: str | None, device: torch.device,
                    origin: dict[str, str]) -> Resolved:
    """The `resolved` event: what a run used (shared with bsnn.api). `model` is what the user
    gave; a path or bundled:NAME is resolved to its file and hashed."""
    checkpoint = None
    if meta is not None and (model.startswith("bundled:") or Path(model).is_file()):
        checkpoint = str(resolve_model_path(model).absolute())
    return Resolved(
        model=model, checkpoint=checkpoint,
        checkpoint_sha256=file_sha256(checkpoint) if checkpoint else None,
        arch=meta.arch if meta else None, width=meta.width if meta else None,
        binary=meta.binary if meta else None, num_classes=meta.num_classes if meta else None,
        dataset=info.name if info else None, data_path=data_path,
        input_shape=list(info.input_shape) if info else None,
        mean=list(info.mean) if info else None, std=list(info.std) if info else None,
        device=str(device), device_name=device_name(device), versions=versions(),
        origin=origin)


def _origins(c: RunConfig, ours: bool, dataset: str, device: torch.device,
             stats_from: str) -> dict[str, str]:
    """Where each resolved value came from, for those the user did not type as they are."""
    default = "from checkpoint" if ours else "default for files without metadata"
    origin = {"stats": stats_from}
    if c.arch is None:
        origin["arch"] = default
    if c.width is None:
        origin["width"] = default
    if c.dataset is None:
        origin["dataset"] = default
    if dataset == "digits":
        origin["data_path"] = "bundled; --data not used"
    elif c.data != data_source(dataset, c.data):
        origin["data_path"] = f"--data {c.data}"
    if c.device != str(device):
        origin["device"] = f"--device {c.device}"
    return origin


def conversion_events(conversion: Conversion, percentile: float,
                      granularity: str) -> list[Event]:
    """What a conversion tells a run's consumers: its warnings, then its thresholds (shared with
    bsnn.api, so both streams describe a network alike)."""
    warnings: list[Event] = [RunWarning(message=m) for m in conversion.warnings]
    net = conversion.network
    layers = [{**row, "macs": macs} for row, macs in zip(net.describe(), layer_macs(net),
                                                            strict=True)]
    return [*warnings, Thresholds(layers=layers, percentile=percentile,
                                  granularity=granularity)]


def snn_calibrated(conversion: Conversion, batches: Callable[[], Iterator[torch.Tensor]],
                   images: int, options: SimOptions, mode: str) -> tuple[Conversion, Event]:
    """Li et al.'s SNN calibration (bsnn.conversion.correction) on a copy of the network's layers
    (it sets their biases or initial potentials), so the converted network stays as it was;
    the calibrated conversion and its `snn_calibration` event. Shared with bsnn.api."""
    from bsnn.conversion.correction import correct_errors

    network = dataclasses.replace(conversion.network,
                                  layers=[copy.copy(layer) for layer in conversion.network.layers])
    errors = correct_errors(network, conversion.ann, batches, options, mode)
    names = [layer.name for layer in network.spiking]
    event = SnnCalibration(mode=mode, images=images,
                           error_before=dict(zip(names, errors, strict=True)))
    return dataclasses.replace(conversion, network=network), event


def _trained_stats(raw: dict[str, Any], dataset: str) -> tuple[list[float], list[float]] | None:
    """The mean and std a bsnn checkpoint's model was trained with; None (the data set's own)
    for files without metadata."""
    meta = raw.get("meta") if has_meta(raw) else None
    return recorded_stats(meta.get("mean"), meta.get("std"), dataset) if meta else None


def recorded_stats(mean: Any, std: Any, dataset: str) -> tuple[list[float], list[float]] | None:
    """A model's recorded mean and std; None (the data set's own) when there are none, or
    stats that do not fit the data set's channels (the shape check then says what is wrong)."""
    fits = bool(mean and std) and len(mean) == len(std) and len(mean) in (1, CHANNELS[dataset])
    return (list(mean), list(std)) if fits else None


def _completed(state: _Run) -> None:
    """The run's last event, after the original's results line and the exports."""
    summary = summarize(state.events)
    accuracy = summary["final_accuracy"]
    state.end(Finished(images=state.images, wall_time_s=state.sim_seconds,
                       final_accuracy=accuracy),
              None if accuracy is None else
              lambda: append_results_line(state.config, state.sim_seconds, 100 * accuracy))


def run(config: RunConfig, emit: Emit | None = None,
        cancel: Callable[[], bool] | None = None) -> dict[str, Any]:
    """Run `config`; return the summary (see bsnn.report.summarize).

    Raises BsnnError (after emitting `failed`) on bad input, and RunStorageError when a file
    of the run (its log, exports or results line) cannot be written; returns normally when
    cancelled.
    """
    config.validate()
    state = _Run(config, emit, cancel)
    try:
        state.execute()
    except CancelRequested:
        state.end(Cancelled(images=state.images))
        return summarize(state.events)
    except torch.cuda.OutOfMemoryError:
        err = DeviceError(f"CUDA ran out of memory at batch size {config.batch_size}",
                          f"pass a smaller --batch-size, e.g. {max(1, config.batch_size // 2)}")
        state.fail(type(err).__name__, err.message, err.fix)
        raise err from None
    except BsnnError as err:
        state.fail(type(err).__name__, err.message, err.fix)
        raise
    except Exception as err:
        if state.world.main:  # other ranks print theirs (torchrun collects it)
            (state.run_dir / "traceback.txt").write_text(traceback.format_exc())
        state.fail(type(err).__name__, str(err),
                   f"unexpected; the traceback is in {state.run_dir / 'traceback.txt'}")
        raise
    _completed(state)
    return summarize(state.events)
