"""The Python API: a CLI run as three calls, `load_model`, `convert` and `simulate`.

`convert` sets the thresholds with the runner's own stage; `simulate` is a run of the one runner
(bsnn.pipeline.runner), so its events, its error policy, its cancel (a callback, or `bsnn cancel`
on its run folder) and its summary (`summary.json`'s keys, as a typed `Summary`) are those of
`bsnn convert`. The options are the CLI's (bsnn.options): the same names, defaults and checks, as
keywords.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from bsnn.api_progress import compose, progress_sink
from bsnn.checkpoint import ModelMeta, has_meta, read_checkpoint
from bsnn.checkpoint import load_model as load_checkpoint
from bsnn.config import RunConfig
from bsnn.conversion import Conversion
from bsnn.data import calibration_subset, load_split, make_loader
from bsnn.devices import resolve_device
from bsnn.errors import ConfigError
from bsnn.events import Emit, Phase, Progress
from bsnn.models import DEFAULT_ARCH
from bsnn.options import CONVERT_OPTIONS, SIMULATE_OPTIONS, keyword_values
from bsnn.pipeline.runner import Runner
from bsnn.pipeline.sources import (
    ConvertedSource,
    as_dataset,
    check_images,
    check_model_takes,
    first_images,
    name_of,
    named_split,
)
from bsnn.pipeline.stages import ProgressFn, calibrate_thresholds
from bsnn.records import plural
from bsnn.snn.network import SpikingNetwork
from bsnn.summary import Summary

__all__ = ["CONVERT_OPTIONS", "SIMULATE_OPTIONS", "ConvertedNetwork", "convert", "load_model",
           "simulate"]
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


def convert(model: Model, calibration: Any, *, progress: bool = False,
            **options: Any) -> ConvertedNetwork:
    """Convert `model` (a path, `bundled:NAME` or an nn.Module; see `load_model`), its
    thresholds set from `norm` random images of `calibration`: a data set's name (its training
    split, normalised as a CLI run would), a tensor of images, a Dataset or a DataLoader (its
    data set), already normalised as the model expects. Options (CONVERT_OPTIONS): the CLI's.
    The model moves to the device. `progress=True` prints the calibration's passes (stderr)."""
    o = keyword_values(options, CONVERT_OPTIONS, "convert")
    device = resolve_device(o["device"])
    name = name_of(calibration, o)
    net = load_model(model, dataset=name, data=o["data"])
    meta = getattr(net, "meta", None)
    images = (named_split(name, "train", meta, o)[0] if name is not None
              else as_dataset(calibration, labelled=False))
    if name is None:
        check_model_takes(net, images)
    subset = (first_images(images, o["norm"], o["seed"]) if o["protocol"] == "original"
              else calibration_subset(images, o["norm"], seed=o["seed"]))
    net.to(device)

    def batches() -> Iterator[torch.Tensor]:
        loader = make_loader(subset, o["batch_size"], pin_memory=device.type == "cuda",
                             seed=o["seed"])
        for x, _ in loader:
            yield x.to(device, non_blocking=True)

    conversion = calibrate_thresholds(net, batches, RunConfig(**o),
                                      _calibration_progress(len(subset)) if progress else None)
    snn_images = (None if o["snn_calibration"] == "none" else
                  calibration_subset(images, o["snn_calibration_size"], seed=o["seed"] + 1))
    return ConvertedNetwork(conversion, net, device, o, snn_images)


def _calibration_progress(images: int) -> ProgressFn:
    """convert's `progress=True`: the threshold calibration's passes, as a run shows them."""
    sink = progress_sink()
    sink(Phase(name="threshold_calibration", message=f"over {plural(images, 'image')}"))

    def say(passes: int, done: int, total: int) -> None:
        sink(Progress(phase="threshold_calibration", done=done, total=total,
                      message=f"pass {passes}: {done} of {total} layers' percentiles exact"))
    return say


def simulate(snn: ConvertedNetwork, data: Any, /, *, on_event: Emit | None = None,
             cancel: Callable[[], bool] | None = None, progress: bool = False,
             **options: Any) -> Summary:
    """Simulate `snn` on `data` (a data set's name: its evaluation split; (images, labels), a
    Dataset or a DataLoader's data set) and return the run's Summary (`summary.json`'s keys as
    attributes, or by key: final_accuracy, accuracy_per_step, ann_accuracy, layers, ...).
    Options (SIMULATE_OPTIONS): the CLI's; `job_dir` (default none: nothing written) writes a
    run folder, which `bsnn cancel` can stop. `on_event` gets every typed event; `cancel()` is
    checked once per batch and ends the run as cancelled; `progress=True` shows a tqdm bar (or,
    without tqdm, lines) on stderr. Data that cannot fit the network raises DataError before
    the run starts. A failure raises (after a failed run folder is written, where there is
    one)."""
    o = keyword_values(options, SIMULATE_OPTIONS, "simulate")
    device = resolve_device(o["device"])
    if device != snn.device:
        raise ConfigError(f"the network was converted on {snn.device}, simulate asks for "
                          f"{device}", f"pass device={str(device)!r} to convert too")
    name = name_of(data, o)
    model = getattr(snn.model, "checkpoint", type(snn.model).__name__)
    config = RunConfig(**{**snn.options, **o, "model": model, "dataset": name})
    if name is None:  # before a run folder exists: the data cannot fit the network
        check_images(as_dataset(data, labelled=True), snn.network.input_shape, "evaluation")
    emit = compose(on_event, progress_sink() if progress else None)
    return Runner(config, ConvertedSource(snn, data, o), emit, cancel).run()
