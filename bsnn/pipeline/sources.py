"""Where a run's model and data come from: a RunConfig's names, or the Python API's objects.

A source's `load(run)` sends the load phases' events through the runner and returns the
`Loaded` inputs; the runner does everything after that the same way for both.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset

from bsnn.checkpoint import ModelMeta, has_meta, load_model, read_checkpoint
from bsnn.data import (
    DatasetInfo,
    calibration_subset,
    eval_subset,
    load_split,
    normalization,
)
from bsnn.devices import resolve_device
from bsnn.distributed import local_device
from bsnn.errors import ConfigError, DataError
from bsnn.events import Phase
from bsnn.models import DEFAULT_ARCH
from bsnn.options import OPTION
from bsnn.pipeline.inputs import (
    Loaded,
    check_fits,
    data_source,
    eval_warnings,
    origins,
    recorded_stats,
    require_images,
    resolved_record,
)
from bsnn.records import plural

if TYPE_CHECKING:
    from bsnn.api import ConvertedNetwork
    from bsnn.pipeline.runner import Runner


class ConfigSource:
    """Everything a RunConfig names: the checkpoint, the data set's splits, the calibration
    images (random, seeded), normalised as --normalize says, else as the checkpoint's training
    was, else with the data set's own statistics."""

    def device(self, run: Runner) -> torch.device:
        return local_device(resolve_device(run.config.device), run.world)

    def load(self, run: Runner) -> Loaded:
        c = run.config
        run.send(Phase(name="load_model", message=f"loading {c.model}"))
        raw = read_checkpoint(c.model)
        ours = has_meta(raw)
        dataset = c.dataset or (raw["meta"]["dataset"] if ours else "cifar100")
        meta_raw = raw.get("meta") if ours else None
        trained = recorded_stats(meta_raw.get("mean"), meta_raw.get("std"),
                                 dataset) if meta_raw else None
        mean, std = normalization(dataset, c.normalize or trained)
        run.send(Phase(name="load_data", message=f"loading {dataset} (mean {list(mean)}, "
                       f"std {list(std)})"))
        # the original's protocol: CIFAR's training transform (random crop and flip) on both
        # splits; its ImageNet pipeline calibrates and evaluates with resize and centre crop
        augment = c.protocol == "original" and dataset.startswith("cifar")
        split_kw = {"val_split": c.val_split, "seed": c.seed, "image_size": c.image_size,
                    "normalize": (mean, std), "augment": augment}
        train_set, info = load_split(dataset, "train", c.data, **split_kw)
        val_set, _ = load_split(dataset, "val", c.data, **split_kw)
        model, meta = load_model(
            c.model, raw=raw, dataset=c.dataset, num_classes=None if ours else info.num_classes,
            arch=c.arch or (None if ours else DEFAULT_ARCH.get(dataset, "vgg15ab")),
            input_shape=info.input_shape, width=c.width)
        check_fits(meta, info)
        if run.world.main:  # the one record of what ran (hashing the file once, on rank 0)
            stats_from = (f"--normalize {c.normalize}" if c.normalize else
                          "from checkpoint" if trained else f"{dataset}'s own")
            run.send(resolved_record(c.model, meta, info, data_source(dataset, c.data),
                                     run.device, origins(c, ours, dataset, run.device,
                                                         stats_from)))
        require_images(val_set, dataset, "check --data")
        snn_images = (None if c.snn_calibration == "none" else
                      calibration_subset(train_set, c.snn_calibration_size, seed=c.seed + 1))
        original = c.protocol == "original"
        return Loaded(model.to(run.device),
                      shuffled(eval_subset(val_set, c.eval_size), c.seed) if original
                      else eval_subset(val_set, c.eval_size),
                      calibration=first_images(train_set, c.norm, c.seed) if original
                      else calibration_subset(train_set, c.norm, seed=c.seed),
                      snn_images=snn_images,
                      warnings=eval_warnings(c.eval_size, len(val_set), dataset),
                      dataset=dataset)


@dataclass
class ConvertedSource:
    """A network `bsnn.convert` made and the data given to `bsnn.simulate`: a data set's name
    (its evaluation split, normalised as a CLI run would), (images, labels) tensors, a Dataset
    or a DataLoader (its data set)."""

    snn: ConvertedNetwork
    data: Any
    options: Mapping[str, Any]

    def device(self, run: Runner) -> torch.device:
        return self.snn.device

    def load(self, run: Runner) -> Loaded:
        o, snn = self.options, self.snn
        name = name_of(self.data, o)
        run.send(Phase(name="load_data", message=f"loading {name}'s evaluation split" if name
                       else "evaluation data given to simulate() in memory"))
        images, info = (named_split(name, "val", snn.meta, o) if name is not None
                        else (as_dataset(self.data, labelled=True), None))
        require_images(images, name or "given",
                       "pass at least one image" if name is None else "check data=")
        check_images(images, snn.network.input_shape, "evaluation")
        origin = {"data_path": "given to simulate() in memory"} if info is None else {}
        if info is not None and info.name == "digits":
            origin["data_path"] = "bundled"
        if snn.meta is None:
            origin["arch"] = "an nn.Module without bsnn metadata"
        run.send(resolved_record(str(run.config.model), snn.meta, info,
                                 None if info is None else data_source(info.name, o["data"]),
                                 snn.device, origin))
        judged = eval_subset(images, o["eval_size"])
        return Loaded(snn.model,
                      shuffled(judged, o["seed"]) if o["protocol"] == "original" else judged,
                      conversion=snn.conversion, snn_images=snn.snn_images,
                      warnings=eval_warnings(o["eval_size"], len(images), name or "the data"))


def first_images(dataset: Dataset[Any], n: int, seed: int) -> Dataset[Any]:
    """The original's calibration images: the first `n` of the split in its stored order, each
    transformed once (its random crop and flip drawn with `seed`) and kept, so that every pass
    of the percentile sees the same images, as the original's one batch does."""
    count = min(n, len(dataset))  # type: ignore[arg-type]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pairs = [dataset[i] for i in range(count)]
    return TensorDataset(torch.stack([x for x, _ in pairs]),
                         torch.tensor([int(y) for _, y in pairs]))


def shuffled(dataset: Dataset[Any], seed: int) -> Dataset[Any]:
    """The original's evaluation order: a shuffled test set (a seeded permutation here)."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))  # type: ignore[arg-type]
    return Subset(dataset, order.tolist())


def name_of(data: Any, o: Mapping[str, Any]) -> str | None:
    """A data set's name, checked as --dataset is; None for data given as tensors & co."""
    if not isinstance(data, str):
        return None
    OPTION["dataset"].validate(data, o)
    return data


def named_split(name: str, split: str, meta: ModelMeta | None,
                o: Mapping[str, Any]) -> tuple[Dataset[Any], DatasetInfo]:
    """A data set's split normalised as a CLI run would: `normalize`, else the statistics the
    model was trained with, else the data set's own; checked against the model."""
    stats = normalization(name, o["normalize"] or (
        recorded_stats(meta.mean, meta.std, name) if meta else None))
    augment = o.get("protocol") == "original" and name.startswith("cifar")  # as ConfigSource
    images, info = load_split(name, split, o["data"], val_split=o["val_split"], seed=o["seed"],
                              image_size=o["image_size"], normalize=stats, augment=augment)
    if meta is not None:
        check_fits(meta, info)
    return images, info


def as_dataset(data: Any, labelled: bool) -> Dataset[Any]:
    """A DataLoader's data set, a Dataset, (images, labels), or (calibration) bare images."""
    if isinstance(data, DataLoader):
        return data.dataset
    if isinstance(data, Dataset):
        return data
    if isinstance(data, tuple | list) and len(data) == 2 and all(
            isinstance(t, torch.Tensor) for t in data):
        images, labels = data
        if labels.dim() != 1 or len(labels) != len(images):
            raise DataError(f"{_count(labels, 'label')} for {_count(images, 'image')}",
                            "pass one label per image: (images, labels) with labels a 1-D "
                            "tensor as long as images")
        return TensorDataset(images, labels.long())
    if isinstance(data, torch.Tensor) and not labelled:
        return TensorDataset(data, torch.zeros(len(data), dtype=torch.long))
    use = "evaluation" if labelled else "calibration"
    kinds = "a DataLoader, a Dataset, (images, labels) tensors or a data set name"
    raise ConfigError(f"cannot use a {type(data).__name__} as {use} data",
                      f"pass {kinds}" + ("" if labelled else ", or a tensor of images"))


def _count(t: torch.Tensor, word: str) -> str:
    """`3 labels`, or `3x10 labels` for a tensor of another shape."""
    return plural(len(t), word) if t.dim() == 1 or word == "image" else \
        f"{_dims(t.shape) or 'a scalar of'} {word}s"


def _dims(shape: Sequence[int]) -> str:
    return "x".join(map(str, shape))


def first_image(images: Dataset[Any], use: str) -> torch.Tensor | None:
    """The data's first image (None for empty data: require_images says so); DataError when
    its items are not image tensors or (image, label) pairs."""
    if len(images) == 0:  # type: ignore[arg-type]
        return None
    item = images[0]
    x = item[0] if isinstance(item, tuple | list) else item
    if not isinstance(x, torch.Tensor):
        raise DataError(f"the {use} data holds {type(x).__name__} items, not image tensors",
                        "pass (images, labels) tensors, or a Dataset of (image tensor, label)")
    return x


def check_images(images: Dataset[Any], shape: Sequence[int], use: str) -> None:
    """DataError unless the first image has the network's input shape: a wrong one would fail
    deep inside torch's conv, naming neither the data nor the network."""
    x = first_image(images, use)
    if x is None or tuple(x.shape) == tuple(shape):
        return
    fix = f"pass {use} images as a tensor of shape (N, {', '.join(map(str, shape))})"
    if x.dim() == len(shape) - 1 and shape[0] == 1:
        fix += ": add the channel dimension with images.unsqueeze(1)"
    raise DataError(f"{use} images are {_dims(x.shape)}, the network takes {_dims(shape)}", fix)


def check_model_takes(model: nn.Module, images: Dataset[Any]) -> None:
    """check_images against the input shape the model records, or, for a module without bsnn
    metadata, one image through it: torch's error becomes a DataError naming the shape."""
    meta = getattr(model, "meta", None)
    if meta is not None:
        check_images(images, meta.input_shape, "calibration")
        return
    x = first_image(images, "calibration")
    if x is None:
        return
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            model(x.unsqueeze(0).to(device))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise DataError(f"the model cannot take calibration images of {_dims(x.shape)} "
                        f"({first})", "pass images of the shape the model was made for, as a "
                        "tensor (N, C, H, W)") from None
