"""`bsnn convert`: the original conversion.py's flags, plus bsnn's own."""

from __future__ import annotations

import argparse

from bsnn.config import CHOICES, RunConfig


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The run flags, shared with `bsnn-tui` so both take the same command line."""
    d = RunConfig()
    p.add_argument("--job-dir", default=d.job_dir, help="results folder; one run folder per run")
    p.add_argument("--model", default=d.model,
                   help="checkpoint path or bundled name (bundled:digits-fp, "
                        "bundled:digits-binary)")
    p.add_argument("--results-file", default=d.results_file,
                   help="CSV line appended to <job-dir>/results/NAME (as the original)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--time", type=int, default=d.time, help="time steps T (default 80)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--n-workers", type=int, default=d.n_workers,
                   help="data loader workers (-1: 4 per GPU)")
    p.add_argument("--norm", type=int, default=d.norm,
                   help="training images used to calibrate thresholds (default 128)")
    p.add_argument("--gpu", action="store_true", help="run on CUDA (same as --device cuda)")
    p.add_argument("--one-step", action="store_true",
                   help="same-step propagation (the default; kept for the original's flag)")
    p.add_argument("--data", default=d.data, help="data root (default ./data/)")
    p.add_argument("--arch", default=None, help="architecture for checkpoints without metadata")
    p.add_argument("--percentile", type=float, default=d.percentile)
    p.add_argument("--eval_size", type=int, default=d.eval_size, help="images evaluated, -1 all")
    p.add_argument("--dataset", default=None,
                   help="digits, cifar10, cifar100, imagenet or imagefolder "
                        "(default: the checkpoint's; cifar100 for original files)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto)")
    for name in ("propagation", "reset", "v0", "encoding", "threshold_granularity",
                 "binary_weights", "backend"):
        p.add_argument(f"--{name.replace('_', '-')}", choices=CHOICES[name],
                       default=getattr(d, name))
    p.add_argument("--val-split", type=float, default=None,
                   help="imagefolder without val/: fraction held out for evaluation")
    p.add_argument("--image-size", type=int, default=None, help="imagefolder image size")
    p.add_argument("--run-id", default=None, help="name of the run folder (default: time-based)")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """RunConfig from parsed flags; --gpu and --one-step map onto --device / --propagation."""
    device = args.device or ("cuda" if args.gpu else "auto")
    propagation = "same-step" if args.one_step else args.propagation
    return RunConfig(
        model=args.model, dataset=args.dataset, arch=args.arch, data=args.data,
        percentile=args.percentile, time=args.time, batch_size=args.batch_size,
        eval_size=args.eval_size, norm=args.norm, n_workers=args.n_workers, seed=args.seed,
        device=device, propagation=propagation, reset=args.reset, v0=args.v0,
        encoding=args.encoding, threshold_granularity=args.threshold_granularity,
        binary_weights=args.binary_weights, backend=args.backend, job_dir=args.job_dir,
        results_file=args.results_file, run_id=args.run_id, val_split=args.val_split,
        image_size=args.image_size,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an ANN to an SNN and simulate it",
                       description="Convert an ANN to a spiking network and simulate T steps.")
    add_run_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress, only the summary")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bsnn.cli.progress import ProgressPrinter, print_summary
    from bsnn.run import run

    config = config_from_args(args).validate()
    console = Console()
    printer = None if args.quiet else ProgressPrinter(console)
    try:
        summary = run(config, emit=printer)
    finally:
        if printer is not None:
            printer.stop()
    print_summary(console, summary)
    return 0 if summary["status"] == "finished" else 1
