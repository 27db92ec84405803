"""Training loops and the paper's recipes as presets.

A `Recipe` is everything that decides what gets trained; `train()` runs it, keeps the best
checkpoint (by validation accuracy) at `out` and a resumable state beside it at `<stem>.last.pt`.
Progress goes to a callback, so the CLI, a notebook or a test can show it as they like (the core
never imports rich or textual).

Epochs are counted from 0 inside the code, as in the original training scripts (`if epoch in
schedule`): "divide by 10 at 81" means epochs 0..80 use the base rate and epoch 81 the tenth.
The learning rate and weight decay are pure functions of the epoch, so a resumed run only needs
the epoch number to be on the same schedule.

Binary models train their full-precision shadow weights in one of two ways (`Recipe.binarize`):
`ste`, plain straight-through training, or `xnor`, the behaviour of the authors' BinOp
(bsnn.models.binary.XnorBinOp): the shadow weights are mean-centred and clamped before every
forward pass and their gradient is scaled as theirs; `make_optimizer` exempts them from weight
decay, as the authors' x1e9 gradient did. `Recipe.init` starts any model from a checkpoint's
weights, e.g. a binary model from its full-precision twin, as the authors fine-tuned theirs.

Under torchrun (`torchrun --nproc-per-node N -m bsnn train ...`) the model is wrapped in
DistributedDataParallel: the recipe's batch size stays the global one (each rank takes batch/N
images of a DistributedSampler's share), validation is sharded and its counts summed, so the
figures are those of the whole set; rank 0 alone reports progress and writes the checkpoints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from bsnn import distributed
from bsnn.checkpoint import ModelMeta, load_model, load_state, read_checkpoint, save_checkpoint
from bsnn.devices import loader_workers, resolve_device
from bsnn.errors import CheckpointError, ConfigError
from bsnn.models import build_model
from bsnn.models.binary import XnorBinOp, binary_layers
from bsnn.recipes import Recipe

# Fields a resumed run must share with the run it continues; the rest (epochs, rates, batch
# size) may change, e.g. `--resume --epochs 60` to train further.
FIXED_ON_RESUME = ("dataset", "arch", "binary", "image_size", "val_split", "seed", "optimizer",
                   "dropout", "binarize", "init", "width", "normalize")

# The authors multiplied the binary layers' gradients by 1e9 before Adam's step. Adam's step is
# the same for any gradient scale except through its eps and its L2 weight decay (added to the
# gradient), which the 1e9 made negligible for those weights. bsnn keeps gradients at their
# size and gives those weights no weight decay and eps / 1e9 instead: the same steps.
THEIR_GRADIENT_SCALE = 1e9
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class BatchProgress:
    """Reported after every training batch; loss and accuracy are running means of the epoch."""

    epoch: int
    epochs: int
    batch: int
    batches: int
    loss: float
    accuracy: float


@dataclass(frozen=True)
class EpochResult:
    """Reported after every epoch's validation."""

    epoch: int
    epochs: int
    lr: float
    train_loss: float
    train_accuracy: float
    val_accuracy: float
    best_accuracy: float
    improved: bool
    seconds: float


@dataclass(frozen=True)
class TrainStart:
    """Reported once, before the first batch."""

    recipe: Recipe
    start_epoch: int
    train_size: int
    val_size: int
    device: str
    world_size: int = 1  # processes under torchrun (DistributedDataParallel)


TrainEvent = TrainStart | BatchProgress | EpochResult
Progress = Callable[[TrainEvent], None]


@dataclass(frozen=True)
class TrainResult:
    """Where the best model is, how good it is, and the per-epoch history of this call."""

    out: Path
    last: Path
    best_accuracy: float
    best_epoch: int
    history: tuple[EpochResult, ...]
    seconds: float


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


def evaluate(model: nn.Module, loader: DataLoader, device: torch.device | str = "cpu") -> float:
    """Top-1 accuracy (0..1) in eval mode: dropout off, no gradients, same answer every time."""
    correct, total = _count_correct(model, loader, device)
    return correct / max(total, 1)


def _count_correct(model: nn.Module, loader: DataLoader,
                   device: torch.device | str) -> tuple[int, int]:
    was_training = model.training
    model.eval()
    correct = total = 0
    with torch.inference_mode():
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            correct += int((model(x).argmax(1) == y).sum())
            total += y.numel()
    model.train(was_training)
    return correct, total


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with momentum or Adam; binary layers hand their full-precision shadow weights here.

    With `binarize="xnor"` those weights form a second group without weight decay (its `decay`
    is False: the schedule leaves it at 0) and with Adam's eps / 1e9: the steps the authors'
    x1e9 gradients gave (see THEIR_GRADIENT_SCALE)."""
    groups = _param_groups(model, recipe)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, betas=recipe.betas, eps=ADAM_EPS,
                                weight_decay=recipe.weight_decay)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)


def _param_groups(model: nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    xnor = recipe.binary and recipe.binarize == "xnor"
    shadow = {id(layer.weight) for layer in binary_layers(model)} if xnor else set()
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if id(p) not in shadow], "decay": True}]
    if shadow:
        groups.append({"params": [p for p in model.parameters() if id(p) in shadow],
                       "decay": False, "weight_decay": 0.0,
                       "eps": ADAM_EPS / THEIR_GRADIENT_SCALE})
    return groups


def apply_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, epoch: int) -> float:
    """Set the epoch's learning rate and weight decay in every group (weight decay stays 0 in
    a group whose `decay` is False: xnor's shadow weights); return the rate."""
    lr = recipe.lr_at(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = recipe.weight_decay_at(epoch) if group.get("decay", True) else 0.0
    return lr


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """Every epoch reseeds shuffling, augmentation and dropout: a resumed run is the same run.
    Each rank gets its own stream (rank 0's is the 1-process one), or all ranks would draw the
    same dropout masks and augmentations."""
    return seed * 100_003 + epoch + (rank << 32)


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    report: Callable[[int, int, float, float], None],
    binop: XnorBinOp | None = None,
) -> tuple[float, int, int]:
    """One pass over `loader`: (loss sum, correct, images), this rank's share.

    With `binop` (xnor training) the authors' order: the shadow weights are centred and clamped
    before every forward pass (once here, then after each step, so they hold when the epoch's
    validation and checkpoint see them, as the authors' test() re-applied it) and their
    gradients scaled between the backward pass and the optimiser's step."""
    model.train()
    loss_fn = nn.CrossEntropyLoss()
    loss_sum = 0.0
    correct = seen = 0
    batches = len(loader)
    if binop is not None:
        binop.constrain()
    for i, (x, y) in enumerate(loader):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out = model(x)
        loss = loss_fn(out, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if binop is not None:
            binop.scale_gradients()
        optimizer.step()
        if binop is not None:
            binop.constrain()
        n = y.numel()
        loss_sum += loss.item() * n
        correct += int((out.argmax(1) == y).sum())
        seen += n
        report(i + 1, batches, loss_sum / seen, correct / seen)
    return loss_sum, correct, seen


def train(
    recipe: Recipe,
    out: str | Path,
    *,
    data: str | None = None,
    device: str = "auto",
    n_workers: int | None = None,
    resume: bool = False,
    download: bool = False,
    progress: Progress | None = None,
) -> TrainResult:
    """Train `recipe`; keep the best model at `out` and the last state at `<stem>.last.pt`.

    `data` is the data set's folder (None: the data module's default); `download` fetches
    CIFAR into it when missing. With `resume`, the run continues from the last state's epoch,
    optimiser and best accuracy; the recipe may change its epochs and rates but not its model
    or data.
    """
    recipe.validate()
    w = distributed.world()
    notify: Progress = (progress if w.main else None) or (lambda _event: None)
    dev = distributed.local_device(resolve_device(device), w)
    if recipe.batch_size % w.size:
        raise ConfigError(f"batch size {recipe.batch_size} does not split over {w.size} "
                          "processes (it is the global batch: each takes an equal share)",
                          f"pass a --batch-size that is a multiple of {w.size}")
    created = distributed.init_from_env(dev)
    try:
        return _train(recipe, Path(out), w, dev, data=data, n_workers=n_workers,
                      resume=resume, download=download, notify=notify)
    except torch.distributed.DistError as e:  # a peer died mid-collective (its error is its own)
        raise distributed.RankFailed(
            f"rank {w.rank} lost contact with the other {w.size - 1} process(es) while "
            f"training: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
            "another rank failed, was killed or timed out; its own error is in its output "
            "(torchrun's summary names it)") from None
    finally:
        distributed.shutdown(created)


@dataclass
class _Training:
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


def _setup(recipe: Recipe, out: Path, w: distributed.World, dev: torch.device, *,
           data: str | None, n_workers: int | None, download: bool, resume: bool) -> _Training:
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
    return _Training(recipe, out, w, dev, model, net, make_optimizer(model, recipe), meta,
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


def _resume(t: _Training) -> None:
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


def _epoch_loader(t: _Training, epoch: int, seed: int) -> DataLoader:
    """The epoch's shuffled training batches; under torchrun this rank's share, batch / N at a
    time, of the epoch's permutation."""
    from torch.utils.data import DistributedSampler, Subset

    from bsnn import data as datasets

    pin = t.dev.type == "cuda"
    if not t.w.distributed:
        return datasets.make_loader(t.train_set, t.recipe.batch_size, shuffle=True,
                                    n_workers=t.n_workers, pin_memory=pin, seed=seed)
    sampler = DistributedSampler(t.train_set, num_replicas=t.w.size, rank=t.w.rank,
                                 shuffle=True, seed=t.recipe.seed)
    sampler.set_epoch(epoch)
    return datasets.make_loader(Subset(t.train_set, list(sampler)),
                                t.recipe.batch_size // t.w.size, n_workers=t.n_workers,
                                pin_memory=pin, seed=seed)


def _run_epoch(t: _Training, epoch: int, notify: Progress) -> EpochResult:
    """Train one epoch, validate, keep the best model and the resumable state."""
    t0 = time.perf_counter()
    recipe = t.recipe
    lr = apply_schedule(t.optimizer, recipe, epoch)
    seed = _epoch_seed(recipe.seed, epoch, t.w.rank)
    torch.manual_seed(seed)

    def report(batch: int, batches: int, loss: float, acc: float) -> None:
        notify(BatchProgress(epoch, recipe.epochs, batch, batches, loss, acc))

    loss_sum, correct, seen = _train_epoch(t.net, _epoch_loader(t, epoch, seed), t.optimizer,
                                           t.dev, report, t.binop)
    val_correct, val_total = _count_correct(t.model, t.val_loader, t.dev)
    # whole-set figures: every rank sees the same numbers and takes the same decisions
    sums = distributed.all_reduce_counts(torch.tensor(
        [loss_sum, correct, seen, val_correct, val_total], dtype=torch.float64, device=t.dev))
    loss_sum, correct, seen, val_correct, val_total = sums.tolist()
    if not math.isfinite(loss_sum):
        raise ConfigError("training diverged (the loss is not finite)",
                          "lower --lr, or check the data normalisation")
    val_acc = val_correct / max(val_total, 1)
    improved = val_acc > t.best_acc
    _save(t, epoch, val_acc, improved)
    return EpochResult(epoch, recipe.epochs, lr, loss_sum / max(seen, 1), correct / max(seen, 1),
                       val_acc, t.best_acc, improved, time.perf_counter() - t0)


def _save(t: _Training, epoch: int, val_acc: float, improved: bool) -> None:
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


def _train(recipe: Recipe, out: Path, w: distributed.World, dev: torch.device, *,
           data: str | None, n_workers: int | None, resume: bool, download: bool,
           notify: Progress) -> TrainResult:
    """`train` once the process group (if any) is joined."""
    started = time.perf_counter()
    t = _setup(recipe, out, w, dev, data=data, n_workers=n_workers, download=download,
               resume=resume)
    if resume:
        _resume(t)
    notify(TrainStart(recipe, t.start_epoch, len(t.train_set), len(t.val_set), str(dev), w.size))
    history: list[EpochResult] = []
    for epoch in range(t.start_epoch, recipe.epochs):
        history.append(_run_epoch(t, epoch, notify))
        notify(history[-1])
    return TrainResult(out, last_state_path(out), t.best_acc, t.best_epoch, tuple(history),
                       time.perf_counter() - started)
