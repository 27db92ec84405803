"""A training run's state: set up from a recipe, resumed from `<stem>.last.pt`, saved each epoch.

Apart from bsnn.train's loops because this is what a run carries between epochs and across a
restart: data, model (and its DistributedDataParallel wrapper), optimiser, the metadata its
checkpoints carry and the best accuracy so far, and the files that hold them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from bsnn import distributed
from bsnn.checkpoint import ModelMeta, load_model, load_state, read_checkpoint, save_checkpoint
from bsnn.devices import loader_workers
from bsnn.errors import CheckpointError, ConfigError
from bsnn.models import build_model
from bsnn.models.binary import XnorBinOp
from bsnn.optimizers import make_optimizer
from bsnn.recipes import Recipe

# Fields a resumed run must share with the run it continues; the rest (epochs, rates, batch
# size) may change, e.g. `--resume --epochs 60` to train further.
FIXED_ON_RESUME = ("dataset", "arch", "binary", "image_size", "val_split", "seed", "optimizer",
                   "dropout", "binarize", "init", "width", "normalize")


def last_state_path(out: str | Path) -> Path:
    """The resumable state lives beside the best model: `model.pt` -> `model.last.pt`."""
    out = Path(out)
    return out.with_name(f"{out.stem}.last{out.suffix}")


def resume_recipe(out: str | Path) -> Recipe:
    """The recipe stored in the resumable state of `out`, for `--resume` to start from."""
    return Recipe.from_dict(_read_last_state(out)["train_state"]["recipe"])


def _read_last_state(out: str | Path) -> dict[str, Any]:
    last = last_state_path(out)
    if not last.is_file():
        raise CheckpointError(f"nothing to resume: {last} does not exist",
                              "run without --resume to start a new training")
    raw = read_checkpoint(last)
    if not isinstance(raw.get("train_state"), dict):
        raise CheckpointError(f"{last} holds no training state", "run without --resume")
    return raw


@dataclass
class Training:
    """One training's state: the model (and its DDP wrapper), optimiser, data, best so far."""

    recipe: Recipe
    out: Path
    w: distributed.World
    dev: torch.device
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    meta: ModelMeta
    train_set: Any
    val_set: Any
    val_loader: DataLoader
    n_workers: int
    binop: XnorBinOp | None = None
    start_epoch: int = 0
    best_acc: float = -1.0
    best_epoch: int = -1


def setup_training(recipe: Recipe, out: Path, w: distributed.World, dev: torch.device, *,
                   data: str | None, n_workers: int | None, download: bool,
                   resume: bool) -> Training:
    """Data, model, optimiser and the metadata its checkpoints carry. The model starts from
    `recipe.init` unless resuming (the last state's weights replace it, so the file that
    started the run need not be there any more)."""
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import Subset

    from bsnn import data as datasets  # torchvision is heavy: load it only when training

    split = {"val_split": recipe.val_split, "image_size": recipe.image_size, "download": download,
             "normalize": recipe.normalize}
    train_set, info = datasets.load_split(recipe.dataset, "train", data, augment=True, **split)
    val_set, _ = datasets.load_split(recipe.dataset, "val", data, **split)
    n_workers = loader_workers(n_workers, recipe.dataset, dev, w.size)
    torch.manual_seed(recipe.seed)
    shape = info.input_shape
    model = build_model(recipe.model_arch, info.num_classes, shape, binary=recipe.binary,
                        dropout=recipe.dropout, width=recipe.width)
    if recipe.init is not None and not resume:
        _load_init(model, recipe, info.num_classes, shape)
    model = model.to(dev)
    meta = ModelMeta(arch=recipe.model_arch, dataset=recipe.dataset,
                     num_classes=info.num_classes, input_shape=shape,
                     binary=recipe.binary, mean=tuple(info.mean), std=tuple(info.std),
                     recipe=recipe.to_dict(), width=recipe.width)
    net: nn.Module = model
    val_part = val_set
    if w.distributed:  # same initial weights everywhere (seeded above, and DDP broadcasts)
        net = DistributedDataParallel(model, device_ids=[dev] if dev.type == "cuda" else None)
        val_part = Subset(val_set, range(w.rank, len(val_set), w.size))  # no padding: exact
    val_loader = datasets.make_loader(val_part, recipe.batch_size, n_workers=n_workers,
                                      pin_memory=dev.type == "cuda")
    binop = XnorBinOp(model) if recipe.binary and recipe.binarize == "xnor" else None
    return Training(recipe, out, w, dev, model, net, make_optimizer(model, recipe), meta,
                    train_set, val_set, val_loader, n_workers, binop)


def _load_init(model: nn.Module, recipe: Recipe, num_classes: int,
               input_shape: tuple[int, int, int]) -> None:
    """`init`: the checkpoint's weights as the starting point (a binary model's shadow weights
    from a full-precision one's). It must be a model of this arch, width and class count."""
    try:
        source, _ = load_model(recipe.init, arch=recipe.model_arch, num_classes=num_classes,
                               input_shape=input_shape, width=recipe.width)
        load_state(model, source.state_dict(), f"--init {recipe.init}")
    except CheckpointError as e:
        raise CheckpointError(
            f"--init {recipe.init} cannot start this training: {e.message}",
            f"pass --init a checkpoint of {recipe.model_arch} (width {recipe.width:g}) with "
            f"{num_classes} classes, or set --arch / --width / --dataset to match it") from None


def resume_training(t: Training) -> None:
    """Continue from the last state: weights, optimiser, epoch and best accuracy."""
    raw = _read_last_state(t.out)
    state = raw["train_state"]
    saved = Recipe.from_dict(state["recipe"])
    changed = [k for k in FIXED_ON_RESUME if getattr(saved, k) != getattr(t.recipe, k)]
    if changed:
        raise ConfigError(
            f"--resume cannot change {', '.join(changed)} (the saved run has "
            + ", ".join(f"{k}={getattr(saved, k)!r}" for k in changed) + ")",
            "drop those options, or train into a new --out",
        )
    load_state(t.model, raw["state_dict"], str(last_state_path(t.out)))
    t.optimizer.load_state_dict(state["optimizer"])
    t.start_epoch = state["epoch"]
    t.best_acc, t.best_epoch = state["best_accuracy"], state["best_epoch"]


def save_epoch(t: Training, epoch: int, val_acc: float, improved: bool) -> None:
    """The best model at `out` when it improved; the resumable state every epoch (rank 0 alone
    writes: the others hold the same weights, through DDP)."""
    if improved:
        t.best_acc, t.best_epoch = val_acc, epoch
        t.meta.ann_accuracy = val_acc
        t.meta.recipe = {**t.recipe.to_dict(), "best_epoch": epoch + 1}
        if t.w.main:
            save_checkpoint(t.out, t.model, t.meta)
    if t.w.main:
        save_checkpoint(last_state_path(t.out), t.model, replace(t.meta, ann_accuracy=val_acc),
                        train_state={"epoch": epoch + 1, "optimizer": t.optimizer.state_dict(),
                                     "best_accuracy": t.best_acc, "best_epoch": t.best_epoch,
                                     "recipe": t.recipe.to_dict()})
