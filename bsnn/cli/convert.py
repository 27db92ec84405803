"""`bsnn convert`: the original conversion.py's flags, plus bsnn's own (all from bsnn.options)."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from bsnn.config import RunConfig
from bsnn.errors import ConfigError
from bsnn.events import Event, Failed, RunWarning, describe
from bsnn.options import add_arguments


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert", help="convert an ANN to an SNN and simulate it",
                       description="Convert an ANN to a spiking network and simulate T steps.")
    add_arguments(p)
    p.add_argument("--quiet", action="store_true", help="no progress, only the summary")
    p.add_argument("--detach", action="store_true",
                   help="run in the background, immune to a closed terminal; prints the run "
                        "folder, to follow with `bsnn-tui --attach` and stop with `bsnn cancel`")
    p.add_argument("--no-wait", action="store_true",
                   help="with --detach: return once the engine has written its first event, "
                        "before the model and data are checked")
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
    from rich.markup import escape

    from bsnn.cli.progress import ProgressPrinter, print_summary
    from bsnn.distributed import world
    from bsnn.pipeline.runner import run
    from bsnn.records import plural
    from bsnn.runfolder import new_run_id, run_dir_for

    config = RunConfig.from_args(args).validate()
    w = world()
    console = Console(quiet=not w.main)  # under torchrun rank 0 alone reports
    if args.detach and w.distributed:
        raise ConfigError("--detach cannot be used under torchrun",
                          "detach torchrun itself instead (nohup torchrun ... &, tmux, or a "
                          "batch job); the dashboard can still attach to the run folder")
    if args.no_wait and not args.detach:
        raise ConfigError("--no-wait is for --detach", "add --detach, or drop --no-wait")
    if args.detach:
        return _detached(console, config, wait=not args.no_wait)
    config.run_id = config.run_id or new_run_id()
    run_dir = run_dir_for(config.job_dir, config.run_id)
    printer = None if args.quiet else ProgressPrinter(console)  # run() emits on rank 0 only

    def shown(event: Event) -> None:
        if _reported_by_main(event):
            return
        if printer is not None:
            printer(event)
        elif isinstance(event, RunWarning):  # --quiet still says what it changed
            console.print(f"[yellow]{escape(describe(event))}[/]", highlight=False)

    with _Interrupts() as interrupts:
        try:
            summary = run(config, emit=shown, cancel=lambda: interrupts.received is not None)
        finally:
            if printer is not None:
                printer.stop()
    print_summary(console, summary)
    if summary.status == "finished":
        return 0
    console.print(f"run {summary.status} after {plural(summary.images, 'image')}; partial summary "
                  f"in {run_dir}", highlight=False)
    return 130 if interrupts.received == signal.SIGINT else 1


def _reported_by_main(event: Event) -> bool:
    """A failure from bad input: run() raises its BsnnError after this event, and the CLI's
    main prints that, so it is said once. An unexpected error's `failed` (naming its saved
    traceback) is still shown."""
    from bsnn import errors

    kind = getattr(errors, event.error, None) if isinstance(event, Failed) else None
    return isinstance(kind, type) and issubclass(kind, errors.BsnnError)


def _detached(console: Any, config: RunConfig, wait: bool) -> int:
    """Start the run as its own process and say each phase it passes until it has been checked
    (with `wait`) or has written its first event. Ctrl-C only stops the waiting: the engine is
    in a session of its own, so the run goes on, and this says so."""
    from bsnn.detach import spawn_engine
    from bsnn.runfolder import new_run_id, run_dir_for

    config.run_id = config.run_id or new_run_id()
    run_dir = run_dir_for(Path(config.job_dir).absolute(), config.run_id)
    console.print(f"starting run {config.run_id} in the background...", highlight=False)
    engine = spawn_engine(config)
    try:
        _await_engine(console, engine, wait)
    except KeyboardInterrupt:
        console.print("\nCtrl-C: stopped waiting; the run goes on in the background (stop it "
                      "with bsnn cancel)", highlight=False)
    console.print(f"run started in the background: [bold]{run_dir}[/]\n"
                  f"  follow it:  bsnn-tui --attach {run_dir}\n"
                  f"  cancel it:  bsnn cancel {run_dir}\n"
                  f"  list runs:  bsnn runs {run_dir.parent}", highlight=False, soft_wrap=True)
    return 0


def _await_engine(console: Any, engine: Any, wait: bool) -> None:
    """Print each event of the engine until its run is checked (`wait`) or has started."""
    from bsnn.cli.progress import ProgressPrinter
    from bsnn.detach import await_engine

    until = "its model, data and thresholds are checked" if wait else "it has started"
    console.print(f"engine pid {engine.proc.pid}; waiting until {until} (Ctrl-C stops the "
                  "waiting, not the run)", style="dim", highlight=False)
    printer = ProgressPrinter(console)

    def say(event: Event) -> None:  # a failure is said once, by the error await_engine raises
        if not isinstance(event, Failed):
            printer(event)

    await_engine(engine, "simulate" if wait else None, on_event=say)
