"""What a run works on, and the record of it: the ANN on its device, the images it is judged
on, the calibration images, and the `resolved` event that says what they were.

Two sources feed the one runner: `ConfigSource` loads everything a RunConfig names (the CLI, the
dashboard, detached runs, sweeps), `ConvertedSource` takes what `bsnn.convert` made and the data
given to `bsnn.simulate` (the Python API).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bsnn.checkpoint import ModelMeta, resolve_model_path, versions
from bsnn.config import RunConfig
from bsnn.conversion import Conversion
from bsnn.data import CHANNELS, DEFAULT_DATA_DIR, DatasetInfo
from bsnn.errors import DataError
from bsnn.events import Event, Resolved, RunWarning


@dataclass
class Loaded:
    """The load phases' result: the ANN on its device and the data it is judged on;
    `calibration`: the images thresholds are calibrated on, or `conversion`: the thresholds
    `bsnn.convert` set already; `snn_images`: the SNN calibration's (None: none asked)."""

    model: nn.Module
    eval_set: Any
    calibration: Any = None
    conversion: Conversion | None = None
    snn_images: Any = None
    warnings: list[Event] = field(default_factory=list)
    dataset: str | None = None  # a named data set read from disk may use loader workers


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


def eval_warnings(eval_size: int, available: int, name: str) -> list[Event]:
    """The warning a run gives when fewer images exist than it was asked to judge."""
    if eval_size <= available:
        return []
    return [RunWarning(message=f"eval size {eval_size} is larger than the {available} images "
                       f"of {name}; using all of them")]


def require_images(images: Any, name: str, fix: str) -> None:
    """DataError for an empty evaluation set: a run over nothing reports nothing."""
    if len(images) == 0:
        raise DataError(f"the {name} evaluation data is empty", fix)


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
    """The `resolved` event: what a run used. `model` is what the user gave; a path or
    bundled:NAME is resolved to its file and hashed."""
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


def origins(c: RunConfig, ours: bool, dataset: str, device: torch.device,
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


def recorded_stats(mean: Any, std: Any, dataset: str) -> tuple[list[float], list[float]] | None:
    """A model's recorded mean and std; None (the data set's own) when there are none, or
    stats that do not fit the data set's channels (the shape check then says what is wrong)."""
    fits = bool(mean and std) and len(mean) == len(std) and len(mean) in (1, CHANNELS[dataset])
    return (list(mean), list(std)) if fits else None
