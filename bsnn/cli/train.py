"""`bsnn train`: train a VGG (full precision or binary) from a preset, with rich progress.

A preset gives every hyper-parameter; each flag given on the command line overrides one field.
Without --preset the data set's own preset is used (`<dataset>-fp` / `<dataset>-binary`), or
the CPU-sized CIFAR-10 one for data sets that have none (an image folder).

Several processes: `torchrun --nproc-per-node N -m bsnn train ...` trains with
DistributedDataParallel (nccl on CUDA, one GPU per process; gloo on CPU). --batch-size stays the
global batch; rank 0 alone prints and writes the checkpoints.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from typing import Any

from rich.console import Console

from bsnn import train as training
from bsnn.cli.progress import progress_bar
from bsnn.data import DATASETS
from bsnn.distributed import world
from bsnn.train import OPTIMIZERS, PRESETS, BatchProgress, EpochResult, Recipe, TrainStart

# The flags that override a preset's field of the same name.
OVERRIDES = ("arch", "dataset", "binary", "epochs", "batch_size", "lr", "weight_decay",
             "optimizer", "seed", "val_split", "image_size")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a full-precision or binary VGG (the paper's recipes as presets)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", choices=list(PRESETS),
                   help="a recipe: batch size, epochs, schedule, weight decay, optimiser, arch")
    p.add_argument("--dataset", choices=DATASETS, help="data set (default: the preset's)")
    p.add_argument("--data", help="data folder (image folders: the root with one folder a class)")
    p.add_argument("--val-split", type=float,
                   help="fraction of an image folder held out for validation, e.g. 0.1")
    p.add_argument("--image-size", type=int, help="resize images to this side length")
    p.add_argument("--download", action="store_true",
                   help="download CIFAR-10/100 into --data if it is not there")
    p.add_argument("--arch", help="architecture: vgg15ab, vgg8ab, vgg6ab (default: the preset's)")
    p.add_argument("--binary", action=argparse.BooleanOptionalAction, default=None,
                   help="binary weights in every layer but the first and the last")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="base learning rate (the preset's schedule applies)")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--optimizer", choices=OPTIMIZERS)
    p.add_argument("--seed", type=int, help="seed for init, shuffling, augmentation, dropout")
    p.add_argument("--out", help="best checkpoint goes here (default: <dataset>-<fp|binary>.pt); "
                                 "the resumable state goes beside it as <name>.last.pt")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>'s .last.pt state (epochs may be raised)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--gpu", action="store_true", help="shortcut for --device cuda")
    p.add_argument("--n-workers", type=int,
                   help="data loader processes (default: 0 on CPU, 4 with CUDA)")
    p.set_defaults(func=run)


def base_recipe(args: argparse.Namespace) -> Recipe:
    """The preset named, or the data set's own, or the CPU-sized one for an image folder."""
    if args.preset:
        return training.preset(args.preset)
    dataset = args.dataset or "digits"
    kind = "binary" if args.binary else "fp"
    if f"{dataset}-{kind}" in PRESETS:
        return PRESETS[f"{dataset}-{kind}"]
    return replace(PRESETS[f"cifar10-{kind}"], dataset=dataset, arch=None)


def overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe fields given explicitly on the command line."""
    return {name: getattr(args, name) for name in OVERRIDES if getattr(args, name) is not None}


def run(args: argparse.Namespace) -> int:
    changes = overrides(args)
    recipe = replace(base_recipe(args), **changes)
    out = args.out or f"{recipe.dataset}-{'binary' if recipe.binary else 'fp'}.pt"
    if args.resume:
        recipe = replace(training.resume_recipe(out), **changes)
    device = "cuda" if args.gpu else args.device
    dev = training.resolve_device(device)
    w = world()
    n_workers = args.n_workers if args.n_workers is not None else (
        min(4, max(1, (os.cpu_count() or 1) // w.size)) if dev.type == "cuda" else 0)

    # under torchrun the other ranks train silently (train() reports progress on rank 0 only)
    console = Console(highlight=False, soft_wrap=True, quiet=not w.main)
    bar = progress_bar(console, "{task.description}",
                       "loss {task.fields[loss]:.4f}  acc {task.fields[acc]:6.2%}", transient=True)
    tasks: dict[int, Any] = {}

    def show(event: training.TrainEvent) -> None:
        if isinstance(event, TrainStart):
            r = event.recipe
            console.print(
                f"training {r.model_arch}{' (binary)' if r.binary else ''} on {r.dataset}: "
                f"{event.train_size} train / {event.val_size} val images, {r.epochs} epochs, "
                f"{r.optimizer} lr {r.lr:g}, batch {r.batch_size}, device {event.device}"
                + (f" x {event.world_size} processes (DistributedDataParallel)"
                   if event.world_size > 1 else "")
                + (f", resuming at epoch {event.start_epoch + 1}" if event.start_epoch else "")
            )
            bar.start()  # only now: an error while loading prints no empty progress display
        elif isinstance(event, BatchProgress):
            if event.epoch not in tasks:
                tasks[event.epoch] = bar.add_task(
                    f"epoch {event.epoch + 1}/{event.epochs}", total=event.batches,
                    loss=0.0, acc=0.0)
            bar.update(tasks[event.epoch], completed=event.batch, loss=event.loss,
                       acc=event.accuracy)
        elif isinstance(event, EpochResult):
            bar.remove_task(tasks.pop(event.epoch))
            console.print(
                f"epoch {event.epoch + 1:>3}/{event.epochs}  lr {event.lr:.2e}  "
                f"train loss {event.train_loss:.4f}  train acc {event.train_accuracy:6.2%}  "
                f"val acc {event.val_accuracy:6.2%}  best {event.best_accuracy:6.2%}"
                f"{'  *' if event.improved else ''}  ({event.seconds:.1f} s)"
            )

    try:
        result = training.train(recipe, out, data=args.data, device=device, n_workers=n_workers,
                                resume=args.resume, download=args.download, progress=show)
    finally:
        if bar.live.is_started:
            bar.stop()
    console.print(
        f"best val accuracy {result.best_accuracy:.2%} (epoch {result.best_epoch + 1}) in "
        f"{result.seconds:.1f} s\nbest checkpoint: {result.out}\n"
        f"resumable state: {result.last} (continue with --resume --out {result.out})"
    )
    return 0
