"""The `bsnn` command line: train, convert, sweep, info, report, runs, cancel, bench.

Each subcommand lives in its own module with `register(subparsers)` and its entry `main(args)`;
the run options' flags come from one table (bsnn.options). This module turns every BsnnError into
one clear message and exit code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from bsnn.errors import BsnnError, ConfigError

SUBCOMMANDS = ("train", "convert", "sweep", "info", "report", "runs", "cancel", "bench", "export")

EXIT_CODES = """exit codes:
  0    finished (for --detach: the run started)
  1    the run was cancelled, or failed unexpectedly (the traceback is in the run folder)
  2    bad input: a missing or unsafe file, a wrong option, no CUDA, an unwritable job dir...
       (one line names the problem, one the fix)
  130  interrupted with Ctrl-C (a run still writes `cancelled` and its partial summary)"""


def build_parser() -> argparse.ArgumentParser:
    import importlib

    from bsnn import __version__
    from bsnn.cli.parser import Parser

    parser = Parser(
        prog="bsnn",
        description="Binary / full-precision ANN -> spiking network conversion and simulation.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"bsnn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"bsnn.cli.{name}").register(sub)
    return parser


def report_error(err: BsnnError) -> None:
    """One line for the problem, one for the fix, on stderr."""
    from rich.console import Console

    from bsnn.distributed import world

    console = Console(stderr=True, highlight=False)
    try:  # under torchrun every rank may fail alike: say which one speaks
        w = world()
        rank = f"rank {w.rank}: " if w.distributed else ""
    except ConfigError:  # torchrun's variables are themselves the problem being reported
        rank = ""
    console.print(f"[bold red]{rank}error:[/] {err.message}")
    if err.fix:
        console.print(f"[bold]fix:[/] {err.fix}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BsnnError as err:
        report_error(err)
        return err.exit_code
    except BrokenPipeError:  # `bsnn runs --json | head` stopped reading: nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit
        return 1
    except OSError as err:  # a file problem no subcommand foresaw: still one clear message
        where = f" ({err.filename})" if err.filename else ""
        report_error(BsnnError(f"{err.strerror or err}{where}",
                               "check the path, its permissions and the free disk space"))
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
