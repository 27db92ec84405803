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
The optimiser and its schedule are in bsnn.optimizers; setting up, resuming and saving a
run's state in bsnn.training_state.

Under torchrun (`torchrun --nproc-per-node N -m bsnn train ...`) the model is wrapped in
DistributedDataParallel: the recipe's batch size stays the global one (each rank takes batch/N
images of a DistributedSampler's share), validation is sharded and its counts summed, so the
figures are those of the whole set; rank 0 alone reports progress and writes the checkpoints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from bsnn import distributed
from bsnn.devices import resolve_device
from bsnn.errors import ConfigError
from bsnn.models.binary import XnorBinOp
from bsnn.optimizers import apply_schedule, make_optimizer
from bsnn.recipes import Recipe
from bsnn.training_state import (
    Training,
    last_state_path,
    resume_recipe,
    resume_training,
    save_epoch,
    setup_training,
)

# The training API; bsnn.cli.train and the tests take these from here, though the optimiser's
# helpers live in bsnn.optimizers and the resumable state's in bsnn.training_state.
__all__ = [
    "BatchProgress", "EpochResult", "Progress", "TrainEvent", "TrainResult", "TrainStart",
    "apply_schedule", "evaluate", "last_state_path", "make_optimizer", "resolve_device",
    "resume_recipe", "train",
]


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


def _epoch_loader(t: Training, epoch: int, seed: int) -> DataLoader:
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


def _run_epoch(t: Training, epoch: int, notify: Progress) -> EpochResult:
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
    save_epoch(t, epoch, val_acc, improved)
    return EpochResult(epoch, recipe.epochs, lr, loss_sum / max(seen, 1), correct / max(seen, 1),
                       val_acc, t.best_acc, improved, time.perf_counter() - t0)


def _train(recipe: Recipe, out: Path, w: distributed.World, dev: torch.device, *,
           data: str | None, n_workers: int | None, resume: bool, download: bool,
           notify: Progress) -> TrainResult:
    """`train` once the process group (if any) is joined."""
    started = time.perf_counter()
    t = setup_training(recipe, out, w, dev, data=data, n_workers=n_workers, download=download,
                       resume=resume)
    if resume:
        resume_training(t)
    notify(TrainStart(recipe, t.start_epoch, len(t.train_set), len(t.val_set), str(dev), w.size))
    history: list[EpochResult] = []
    for epoch in range(t.start_epoch, recipe.epochs):
        history.append(_run_epoch(t, epoch, notify))
        notify(history[-1])
    return TrainResult(out, last_state_path(out), t.best_acc, t.best_epoch, tuple(history),
                       time.perf_counter() - started)
