"""`bsnn convert`: the original conversion.py's flags, plus bsnn's own."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from bsnn.config import CHOICES, RunConfig
from bsnn.errors import ConfigError
from bsnn.events import Event


def add_run_arguments(p: argparse.ArgumentParser, grid: bool = False) -> None:
    """The run flags, shared with `bsnn-tui` so both take the same command line.
    With `grid` (bsnn sweep), --model and --percentile take several values."""
    d = RunConfig()
    many: dict[str, Any] = {"nargs": "+"} if grid else {}
    p.add_argument("--job-dir", default=d.job_dir, help="results folder; one run folder per run")
    p.add_argument("--model", default=[d.model] if grid else d.model, **many,
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
    p.add_argument("--percentile", type=float, default=[d.percentile] if grid else d.percentile,
                   **many)
    p.add_argument("--eval_size", type=int, default=d.eval_size, help="images evaluated, -1 all")
    p.add_argument("--dataset", default=None,
                   help="digits, cifar10, cifar100, imagenet or imagefolder "
                        "(default: the checkpoint's; cifar100 for original files)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda or cuda:N (default auto)")
    for name in ("propagation", "reset", "v0", "encoding", "threshold_granularity",
                 "binary_weights", "backend", "snn_calibration"):
        p.add_argument(f"--{name.replace('_', '-')}", choices=CHOICES[name],
                       default=getattr(d, name))
    p.add_argument("--snn-calibration-size", type=int, default=d.snn_calibration_size,
                   help="training images for --snn-calibration (default %(default)s)")
    p.add_argument("--readout-delay", type=int, default=d.readout_delay,
                   help="the output ignores the first K steps (default %(default)s)")
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
        readout_delay=args.readout_delay, snn_calibration=args.snn_calibration,
        snn_calibration_size=args.snn_calibration_size,
        results_file=args.results_file, run_id=args.run_id, val_split=args.val_split,
        image_size=args.image_size,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an ANN to an SNN and simulate it",
                       description="Convert an ANN to a spiking network and simulate T steps.")
    add_run_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress, only the summary")
    p.add_argument("--detach", action="store_true",
                   help="run in the background, immune to a closed terminal; prints the run "
                        "folder, to follow with `bsnn-tui --attach` and stop with `bsnn cancel`")
    p.set_defaults(func=main)


class _Interrupts:
    """SIGINT / SIGTERM ask the run to stop at its next batch boundary (a second SIGINT stops at
    once), so Ctrl-C still leaves a `cancelled` event and a partial summary."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may set handlers; the caller handles signals
        for signum in (signal.SIGINT, signal.SIGTERM):
            self.previous[signum] = signal.signal(signum, self.handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def handle(self, signum: int, _frame: Any) -> None:
        self.received = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(f"\n{signal.Signals(signum).name}: cancelling at the end of this batch "
              "(Ctrl-C again to stop at once)", file=sys.stderr, flush=True)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    from bsnn.cli.progress import ProgressPrinter, print_summary
    from bsnn.detach import cancel_requested, new_run_id, start_detached
    from bsnn.distributed import world
    from bsnn.run import run

    config = config_from_args(args).validate()
    w = world()
    console = Console(quiet=not w.main)  # under torchrun rank 0 alone reports
    if args.detach and w.distributed:
        raise ConfigError("--detach cannot be used under torchrun",
                          "detach torchrun itself instead (nohup torchrun ... &, tmux, or a "
                          "batch job); the dashboard can still attach to the run folder")
    if args.detach:
        with console.status("starting the engine and checking the inputs..."):
            run_dir = start_detached(config)
        console.print(f"run started in the background: [bold]{run_dir}[/]\n"
                      f"  follow it:  bsnn-tui --attach {run_dir}\n"
                      f"  cancel it:  bsnn cancel {run_dir}\n"
                      f"  list runs:  bsnn runs {run_dir.parent}", highlight=False, soft_wrap=True)
        return 0
    config.run_id = config.run_id or new_run_id()
    run_dir = Path(config.job_dir) / config.run_id
    printer = None if args.quiet else ProgressPrinter(console)  # run() emits on rank 0 only

    def warnings_only(event: Event) -> None:  # --quiet still says what it changed
        if event["type"] == "warning":
            console.print(f"[yellow]warning:[/] {event['message']}")

    with _Interrupts() as interrupts:
        try:
            summary = run(config, emit=printer or warnings_only,
                          cancel=lambda: interrupts.received is not None
                          or cancel_requested(run_dir))
        finally:
            if printer is not None:
                printer.stop()
    print_summary(console, summary)
    if summary["status"] == "finished":
        return 0
    console.print(f"run {summary['status']} after {summary['images']} images; partial summary "
                  f"in {run_dir}", highlight=False)
    return 130 if interrupts.received == signal.SIGINT else 1
