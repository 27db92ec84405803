"""The Python API: a CLI run as three calls, `load_model`, `convert` and `simulate`.

The same engine and the same event stream as `bsnn convert`: `simulate` runs
`bsnn.simulation.Simulation` on a network from `bsnn.conversion.convert`, sends the run's typed
events (to `on_event`, and to a run folder only when `job_dir` is given) and returns
`bsnn.report.summarize` of them, so its figures are `summary.json`'s under the same names. The
options are the CLI's (bsnn.options): the same names, defaults and checks, as keywords.
"""

from __future__ import annotations

import difflib
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bsnn.checkpoint import ModelMeta, has_meta, read_checkpoint, versions
from bsnn.checkpoint import load_model as load_checkpoint
from bsnn.config import RunConfig
from bsnn.conversion import Conversion
from bsnn.conversion import convert as convert_chain
from bsnn.data import (
    DatasetInfo,
    calibration_subset,
    eval_subset,
    load_split,
    make_loader,
    normalization,
)
from bsnn.devices import resolve_device
from bsnn.distributed import World
from bsnn.errors import BsnnError, ConfigError, DataError
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
    RunWarning,
    Started,
    keep,
)
from bsnn.models import DEFAULT_ARCH
from bsnn.options import OPTION, check_values, sim_options_kwargs
from bsnn.report import end_run, summarize
from bsnn.run import (
    check_fits,
    conversion_events,
    data_source,
    recorded_stats,
    resolved_record,
    snn_calibrated,
)
from bsnn.rundir import new_run_dir, new_run_id
from bsnn.simulation import CancelRequested, Simulation
from bsnn.snn.network import SpikingNetwork
from bsnn.snn.options import SimOptions

# The run options each call takes (bsnn.options' names); `data` is a data set's root folder.
CONVERT_OPTIONS = ("data", "normalize", "device", "percentile", "batch_size", "norm", "seed",
                   "threshold_granularity", "binary_weights", "snn_calibration",
                   "snn_calibration_size", "val_split", "image_size")
SIMULATE_OPTIONS = ("data", "normalize", "device", "time", "batch_size", "eval_size", "seed",
                    "readout_delay", "propagation", "reset", "v0", "encoding", "backend",
                    "job_dir", "run_id", "val_split", "image_size", "precision",
                    "energy_mac_pj", "energy_ac_pj", "energy_binary_pj")
Model = str | os.PathLike[str] | nn.Module


@dataclass
class ConvertedNetwork:
    """What `convert` made: the spiking network, the ANN it came from (its chain judges the
    same images in `simulate`), the device both are on and the options used. `snn_images`:
    the images of the SNN calibration, which needs the simulation's options, so `simulate`
    applies it (to a copy) as a CLI run does, after the thresholds."""

    conversion: Conversion
    model: nn.Module
    device: torch.device
    options: dict[str, Any]
    snn_images: Dataset[Any] | None = None

    @property
    def network(self) -> SpikingNetwork:
        return self.conversion.network

    @property
    def thresholds(self) -> list[dict[str, Any]]:
        """Per spiking layer: name, kind, neurons, threshold(s), lambda, ... (describe())."""
        return list(self.network.describe())

    @property
    def meta(self) -> ModelMeta | None:
        return getattr(self.model, "meta", None)


def _options(given: Mapping[str, Any], names: tuple[str, ...], caller: str) -> dict[str, Any]:
    """The table's defaults updated with `given`, checked as the CLI checks its flags; an
    unknown keyword is a ConfigError naming the close matches."""
    for name in given:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ConfigError(f"{caller}() has no option {name!r}",
                              f"{hint}{caller}() takes: {', '.join(names)}")
    values = {n: OPTION[n].default for n in names} | {
        k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in given.items()}
    if "job_dir" in names and "job_dir" not in given:
        values["job_dir"] = None  # in memory unless a run folder is asked for
    check_values({k: v for k, v in values.items() if not (k == "job_dir" and v is None)})
    return values


def load_model(model: Model, *, dataset: str | None = None, arch: str | None = None,
               width: float | None = None, data: str | os.PathLike[str] | None = None,
               ) -> nn.Module:
    """A checkpoint's path or `bundled:NAME` as its nn.Module in eval mode on the CPU (read with
    weights_only=True), its ModelMeta as `.meta` and the name as `.checkpoint`; a module is
    returned as it is, in eval mode. Files of the original repository carry no metadata: their
    `dataset` (default cifar100, read from `data`) and `arch` build them, as in the CLI."""
    if isinstance(model, nn.Module):
        return model.eval()
    raw = read_checkpoint(model)
    if has_meta(raw):
        net, meta = load_checkpoint(model, raw=raw, arch=arch, dataset=dataset, width=width)
    else:
        name = dataset or "cifar100"
        _, info = load_split(name, "val", data)
        net, meta = load_checkpoint(model, raw=raw, dataset=dataset, width=width,
                                    num_classes=info.num_classes, input_shape=info.input_shape,
                                    arch=arch or DEFAULT_ARCH.get(name, "vgg15ab"))
    net.meta = meta
    net.checkpoint = os.fspath(model)
    return net


def _name_of(data: Any, o: Mapping[str, Any]) -> str | None:
    """A data set's name, checked as --dataset is; None for data given as tensors & co."""
    if not isinstance(data, str):
        return None
    OPTION["dataset"].validate(data, o)
    return data


def _named_split(name: str, split: str, meta: ModelMeta | None,
                 o: Mapping[str, Any]) -> tuple[Dataset[Any], DatasetInfo]:
    """A data set's split normalised as a CLI run would: `normalize`, else the statistics the
    model was trained with, else the data set's own; checked against the model."""
    stats = normalization(name, o["normalize"] or (
        recorded_stats(meta.mean, meta.std, name) if meta else None))
    images, info = load_split(name, split, o["data"], val_split=o["val_split"], seed=o["seed"],
                              image_size=o["image_size"], normalize=stats)
    if meta is not None:
        check_fits(meta, info)
    return images, info


def _as_dataset(data: Any, labelled: bool) -> Dataset[Any]:
    """A DataLoader's data set, a Dataset, (images, labels), or (calibration) bare images."""
    if isinstance(data, DataLoader):
        return data.dataset
    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple | list) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) for t in data):
        return TensorDataset(data[0], data[1].long())
    if isinstance(data, torch.Tensor) and not labelled:
        return TensorDataset(data, torch.zeros(len(data), dtype=torch.long))
    use = "evaluation" if labelled else "calibration"
    kinds = "a DataLoader, a Dataset, (images, labels) tensors or a data set name"
    raise ConfigError(f"cannot use a {type(data).__name__} as {use} data",
                      f"pass {kinds}" + ("" if labelled else ", or a tensor of images"))


def convert(model: Model, calibration: Any, **options: Any) -> ConvertedNetwork:
    """Convert `model` (a path, `bundled:NAME` or an nn.Module; see `load_model`), its
    thresholds set from `norm` random images of `calibration`: a data set's name (its training
    split, normalised as a CLI run would), a tensor of images, a Dataset or a DataLoader (its
    data set), already normalised as the model expects. Options (CONVERT_OPTIONS): the CLI's.
    The model moves to the device."""
    o = _options(options, CONVERT_OPTIONS, "convert")
    device = resolve_device(o["device"])
    name = _name_of(calibration, o)
    net = load_model(model, dataset=name, data=o["data"])
    meta = getattr(net, "meta", None)
    images = (_named_split(name, "train", meta, o)[0] if name is not None
              else _as_dataset(calibration, labelled=False))
    subset = calibration_subset(images, o["norm"], seed=o["seed"])
    net.to(device)

    def batches() -> Iterator[torch.Tensor]:
        loader = make_loader(subset, o["batch_size"], pin_memory=device.type == "cuda",
                             seed=o["seed"])
        for x, _ in loader:
            yield x.to(device, non_blocking=True)

    conversion = convert_chain(net, batches, o["percentile"], o["threshold_granularity"],
                               o["binary_weights"])
    snn_images = (None if o["snn_calibration"] == "none" else
                  calibration_subset(images, o["snn_calibration_size"], seed=o["seed"] + 1))
    return ConvertedNetwork(conversion, net, device, o, snn_images)


class _Stream:
    """The run's events: kept for `summarize`, sent to `on_event`, and written to a run folder
    (events.jsonl as they come, the exports at the end) when there is one."""

    def __init__(self, job_dir: str | None, run_id: str | None, on_event: Emit | None) -> None:
        self.events: list[Event] = []
        self.sent = 0
        self.images = 0
        self.on_event = on_event
        self.run_dir = None if job_dir is None else new_run_dir(job_dir, run_id)
        self.run_id = self.run_dir.name if self.run_dir else run_id or new_run_id()
        self.log = None if self.run_dir is None else EventLog(self.run_dir / EVENTS_FILE)

    def send(self, event: Event) -> None:
        """Keep, log and pass on `event`; a log write that fails raises RunStorageError after
        `on_event` has the event."""
        event.seq, self.sent = self.sent, self.sent + 1
        keep(self.events, event)
        try:
            if self.log is not None:
                self.log(event)
        finally:
            if self.on_event is not None:
                self.on_event(event)

    def count(self, event: BatchDone) -> None:
        self.images = event.images
        self.send(event)

    def end(self, last: Event) -> dict[str, Any]:
        """Send `last`, after the run folder's exports where there is one (bsnn.report.end_run);
        the summary. RunStorageError when a write failed and the run had not failed already."""
        if self.run_dir is None or self.log is None:
            self.send(last)
            return summarize(self.events)
        try:
            error = end_run(self.run_dir, self.events, last, self.send)
        finally:
            self.log.close()
        if error is not None:
            raise error
        return summarize(self.events)


def _eval_set(data: Any, snn: ConvertedNetwork,
              o: Mapping[str, Any]) -> tuple[Any, DatasetInfo | None, list[Event]]:
    """The images to judge on, the first `eval_size` of them; the data set's info (None for
    data given in memory); the CLI's warning when there are fewer."""
    name = _name_of(data, o)
    images, info = (_named_split(name, "val", snn.meta, o) if name is not None
                    else (_as_dataset(data, labelled=True), None))
    if len(images) == 0:
        raise DataError(f"the {name or 'given'} evaluation data is empty",
                        "pass at least one image" if name is None else "check --data")
    warnings: list[Event] = []
    if o["eval_size"] > len(images):
        warnings.append(RunWarning(message=f"eval size {o['eval_size']} is larger than the "
                                   f"{len(images)} images of {name or 'the data'}; using all "
                                   "of them"))
    return eval_subset(images, o["eval_size"]), info, warnings


def _resolved(snn: ConvertedNetwork, config: RunConfig,
              info: DatasetInfo | None) -> dict[str, Any]:
    """The run's resolved record, as a CLI run's (bsnn.run.resolved_record), for its Started."""
    origin = {"data_path": "given to simulate() in memory"} if info is None else {}
    if info is not None and info.name == "digits":
        origin["data_path"] = "bundled"
    if snn.meta is None:
        origin["arch"] = "an nn.Module without bsnn metadata"
    record = resolved_record(str(config.model), snn.meta, info,
                             None if info is None else data_source(info.name, config.data),
                             snn.device, origin)
    return {k: v for k, v in record.to_dict().items() if k not in ("type", "time", "seq")}


def _config(snn: ConvertedNetwork, dataset: str | None, o: Mapping[str, Any]) -> RunConfig:
    """The run's RunConfig: conversion's options, then simulation's (they win: seed, batch)."""
    model = getattr(snn.model, "checkpoint", type(snn.model).__name__)
    return RunConfig(**{**snn.options, **o, "model": model, "dataset": dataset})


def simulate(snn: ConvertedNetwork, data: Any, /, *, on_event: Emit | None = None,
             cancel: Callable[[], bool] | None = None, **options: Any) -> dict[str, Any]:
    """Simulate `snn` on `data` (a data set's name: its evaluation split; (images, labels), a
    Dataset or a DataLoader's data set) and return the run's summary, `summary.json`'s keys:
    final_accuracy, accuracy_per_step, ann_accuracy, layers (threshold, firing_rate,
    synops_per_image, ...). Options (SIMULATE_OPTIONS): the CLI's; `job_dir` (default none:
    nothing written) writes a run folder. `on_event` gets every typed event; `cancel()` is
    checked once per batch and ends the run as cancelled."""
    o = _options(options, SIMULATE_OPTIONS, "simulate")
    device = resolve_device(o["device"])
    if device != snn.device:
        raise ConfigError(f"the network was converted on {snn.device}, simulate asks for "
                          f"{device}", f"pass device={str(device)!r} to convert too")
    images, info, warnings = _eval_set(data, snn, o)
    config = _config(snn, None if info is None else info.name, o)
    stream = _Stream(o["job_dir"], o["run_id"], on_event)
    try:
        last: Event = _run(stream, snn, config, images, warnings, cancel or (lambda: False),
                           _resolved(snn, config, info))
    except CancelRequested:
        last = Cancelled(images=stream.images)
    except BsnnError as err:
        stream.end(Failed(error=type(err).__name__, message=err.message, fix=err.fix,
                          images=stream.images))
        raise
    return stream.end(last)


def _run(stream: _Stream, snn: ConvertedNetwork, config: RunConfig, images: Any,
         warnings: list[Event], cancel: Callable[[], bool],
         resolved: dict[str, Any] | None = None) -> Finished:
    """The events of a CLI run from `started` on, the loading and conversion done; the
    `finished` event to end it with."""
    stream.send(Started(run_id=stream.run_id, run_dir=str(stream.run_dir or ""),
                        config=config.to_dict(), device=str(snn.device), versions=versions(),
                        pid=os.getpid(), host=socket.gethostname(), resolved=resolved))
    for event in warnings + conversion_events(snn.conversion, config.percentile,
                                              config.threshold_granularity):
        stream.send(event)
    conversion = snn.conversion
    if snn.snn_images is not None:
        conversion = _snn_calibrated(stream, snn, config, snn.snn_images)
    stream.send(Phase(name="simulate", message=f"{len(images)} images x {config.time} steps "
                      f"on {snn.device}"))
    seconds = Simulation(conversion, SimOptions(**sim_options_kwargs(config)),
                         config.backend, World(), snn.device, stream.count, cancel,
                         lambda dataset: _loader(dataset, config, snn.device),
                         config.batch_size).run(images)
    return Finished(images=stream.images, wall_time_s=seconds,
                    final_accuracy=summarize(stream.events)["final_accuracy"])


def _loader(dataset: Any, config: RunConfig, device: torch.device) -> DataLoader:
    return make_loader(dataset, config.batch_size, pin_memory=device.type == "cuda",
                       seed=config.seed)


def _snn_calibrated(stream: _Stream, snn: ConvertedNetwork, config: RunConfig,
                    images: Dataset[Any]) -> Conversion:
    """Li et al.'s SNN calibration as a CLI run does it (bsnn.run.snn_calibrated: on a copy, so
    that `snn` stays as converted for the next simulate)."""
    stream.send(Phase(name="snn_calibration", message=f"{config.snn_calibration} calibration "
                      f"on {len(images)} training images"))

    def batches() -> Iterator[torch.Tensor]:
        for x, _ in _loader(images, config, snn.device):
            yield x.to(snn.device, non_blocking=True)

    options = SimOptions(**(sim_options_kwargs(config) | {"readout_delay": 0}))
    conversion, event = snn_calibrated(snn.conversion, batches, len(images), options,
                                       config.snn_calibration)
    stream.send(event)
    return conversion
