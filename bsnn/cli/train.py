"""`bsnn train`: train a VGG (full precision or binary) from a preset, with rich progress.

A preset gives every hyper-parameter; each flag given on the command line overrides one field.
Without --preset the data set's own preset is used (`<dataset>-fp` / `<dataset>-binary`), or
the CPU-sized CIFAR-10 one for data sets that have none (an image folder).

Binary models: --init FP.pt starts them from a full-precision checkpoint, as the authors did;
--binarize xnor (the binary presets' default) trains them as the authors' XNOR-Net BinOp did
(shadow weights mean-centred and clamped to [-1, 1] every step, their gradient scale, no weight
decay on them), --binarize ste with plain straight-through gradients.

Several processes: `torchrun --nproc-per-node N -m bsnn train ...` trains with
DistributedDataParallel (nccl on CUDA, one GPU per process; gloo on CPU). --batch-size stays the
global batch; rank 0 alone prints and writes the checkpoints.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import Progress, TaskID

from bsnn.cli.progress import progress_bar
from bsnn.errors import ConfigError
from bsnn.options import TRAIN_OPTIONS, TRAIN_UNSET, add_arguments, check_values, values_from_args
from bsnn.recipes import BINARIZE_MODES, BINARY_FROM_FP, OPTIMIZERS, PRESETS, Recipe, preset

if TYPE_CHECKING:  # the training module loads torch: only when a training runs
    from bsnn.train import TrainEvent, TrainStart

# The recipe fields that a flag given on the command line overrides: those of the run options
# train shares (bsnn.options.TRAIN_OPTIONS) and train's own.
OVERRIDES = ("arch", "dataset", "binary", "epochs", "batch_size", "lr", "weight_decay",
             "optimizer", "seed", "val_split", "image_size", "width", "normalize", "binarize",
             "init")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a full-precision or binary VGG (the paper's recipes as presets)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", choices=list(PRESETS),
                   help="a recipe: batch size, epochs, schedule, weight decay, optimiser, arch; "
                        f"binary presets: {BINARY_FROM_FP}")
    add_arguments(p, TRAIN_OPTIONS, unset=TRAIN_UNSET)
    p.add_argument("--download", action="store_true",
                   help="download CIFAR-10/100 into --data if it is not there")
    p.add_argument("--binary", action=argparse.BooleanOptionalAction, default=None,
                   help="binary weights in every layer but the first and the last")
    p.add_argument("--epochs", type=int, help="epochs to train (default: the preset's)")
    p.add_argument("--lr", type=float, help="base learning rate (the preset's schedule applies)")
    p.add_argument("--weight-decay", type=float,
                   help="weight decay (default: the preset's, with its schedule)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help="optimiser (default: the preset's)")
    p.add_argument("--binarize", choices=BINARIZE_MODES,
                   help="how binary layers train: xnor, the authors' BinOp (centred, clamped "
                        "shadow weights, their gradient scale, no weight decay on them), or ste, "
                        "plain straight-through (default: the preset's; xnor for binary presets)")
    p.add_argument("--init", metavar="MODEL",
                   help="start from this checkpoint's weights (a path or bundled:NAME), e.g. a "
                        "binary model from its full-precision twin (default: random init)")
    p.add_argument("--out", help="best checkpoint goes here (default: <dataset>-<fp|binary>.pt); "
                                 "the resumable state goes beside it as <name>.last.pt")
    p.add_argument("--resume", action="store_true",
                   help="continue from <out>'s .last.pt state (epochs may be raised)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing <out> and its .last.pt (without it, an existing "
                        "checkpoint is refused, never overwritten)")
    p.set_defaults(func=main)


def base_recipe(args: argparse.Namespace) -> Recipe:
    """The preset named, or the data set's own, or the CPU-sized one for an image folder."""
    if args.preset:
        return preset(args.preset)
    dataset = args.dataset or "digits"
    kind = "binary" if args.binary else "fp"
    if f"{dataset}-{kind}" in PRESETS:
        return PRESETS[f"{dataset}-{kind}"]
    return replace(PRESETS[f"cifar10-{kind}"], dataset=dataset, arch=None)


def run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The run options train shares, as given (None: train's own default), checked by the
    table as `bsnn convert` checks them."""
    values = values_from_args(args, unset=TRAIN_UNSET)
    check_values({name: value for name, value in values.items() if value is not None})
    return values


def overrides(args: argparse.Namespace, values: dict[str, Any]) -> dict[str, Any]:
    """The recipe fields given explicitly on the command line."""
    given = vars(args) | values
    return {name: given[name] for name in OVERRIDES if given.get(name) is not None}


def refuse_overwrite(out: str) -> None:
    """ConfigError when a new training would replace `out` or its resumable state: a second
    run with the same --out (the default one, say) must not silently lose a better model."""
    from bsnn.training_state import last_state_path

    for path in (Path(out), last_state_path(out)):
        if os.path.lexists(path):
            raise ConfigError(f"{path} exists already: this training would overwrite it",
                              "pass --out NEW.pt to keep it, --force to replace it, or "
                              "--resume to continue its training")


def main(args: argparse.Namespace) -> int:
    from bsnn import train as training
    from bsnn.distributed import world

    values = run_options(args)
    changes = overrides(args, values)
    recipe = replace(base_recipe(args), **changes)
    out = args.out or f"{recipe.dataset}-{'binary' if recipe.binary else 'fp'}.pt"
    if args.resume:
        recipe = replace(training.resume_recipe(out), **changes)
    elif not args.force:
        refuse_overwrite(out)
    w = world()

    # under torchrun the other ranks train silently (train() reports progress on rank 0 only)
    console = Console(highlight=False, soft_wrap=True, quiet=not w.main)
    bar = progress_bar(console, "{task.description}",
                       "loss {task.fields[loss]:.4f}  acc {task.fields[acc]:6.2%}", transient=True)
    try:
        result = training.train(recipe, out, data=values["data"], device=values["device"],
                                n_workers=values["n_workers"], resume=args.resume,
                                download=args.download,
                                progress=TrainPrinter(console, bar))
    finally:
        if bar.live.is_started:
            bar.stop()
    console.print(
        f"best val accuracy {result.best_accuracy:.2%} (epoch {result.best_epoch + 1}) in "
        f"{result.seconds:.1f} s\nbest checkpoint: {result.out}\n"
        f"resumable state: {result.last} (continue with --resume --out {result.out})"
    )
    return 0


class TrainPrinter:
    """Training events as lines (the start, each epoch) and a bar per epoch's batches."""

    def __init__(self, console: Console, bar: Progress) -> None:
        self.console = console
        self.bar = bar
        self.tasks: dict[int, TaskID] = {}

    def __call__(self, event: TrainEvent) -> None:
        from bsnn.train import BatchProgress, EpochResult, TrainStart

        if isinstance(event, TrainStart):
            self.started(event)
        elif isinstance(event, BatchProgress):
            if event.epoch not in self.tasks:
                self.tasks[event.epoch] = self.bar.add_task(
                    f"epoch {event.epoch + 1}/{event.epochs}", total=event.batches,
                    loss=0.0, acc=0.0)
            self.bar.update(self.tasks[event.epoch], completed=event.batch, loss=event.loss,
                            acc=event.accuracy)
        elif isinstance(event, EpochResult):
            self.bar.remove_task(self.tasks.pop(event.epoch))
            self.console.print(
                f"epoch {event.epoch + 1:>3}/{event.epochs}  lr {event.lr:.2e}  "
                f"train loss {event.train_loss:.4f}  train acc {event.train_accuracy:6.2%}  "
                f"val acc {event.val_accuracy:6.2%}  best {event.best_accuracy:6.2%}"
                f"{'  *' if event.improved else ''}  ({event.seconds:.1f} s)"
            )

    def started(self, event: TrainStart) -> None:
        from bsnn.records import plural

        r = event.recipe
        self.console.print(
            f"training {r.model_arch}{f' x{r.width:g}' if r.width != 1 else ''}"
            f"{f' (binary, {r.binarize})' if r.binary else ''} on {r.dataset}"
            f"{f' from {r.init}' if r.init else ''}: "
            f"{event.train_size} train / {plural(event.val_size, 'val image')}, "
            f"{plural(r.epochs, 'epoch')}, "
            f"{r.optimizer} lr {r.lr:g}, batch {r.batch_size}, device {event.device}"
            + (f" x {event.world_size} processes (DistributedDataParallel)"
               if event.world_size > 1 else "")
            + (f", resuming at epoch {event.start_epoch + 1}" if event.start_epoch else "")
        )
        self.bar.start()  # only now: an error while loading prints no empty progress display
