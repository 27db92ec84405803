"""The command line of `bsnn-tui`: the run flags of `bsnn convert` (both built from the table of
run options, bsnn.options; they prefill the form) plus the dashboard's own (--start, --run-mode,
--attach, --serve)."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence

from bsnn.options import add_arguments
from bsnn_tui.producers import RUN_MODES


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bsnn-tui",
        description="Live dashboard for ANN -> SNN conversion runs. The run flags are those of "
                    "`bsnn convert` and prefill the form.",
    )
    add_arguments(p.add_argument_group("run options (as in `bsnn convert`)"))
    ui = p.add_argument_group("dashboard")
    ui.add_argument("--start", action="store_true", help="start the run at once")
    ui.add_argument("--run-mode", choices=RUN_MODES, default="auto",
                    help="detached: the engine runs as a process of its own and goes on when "
                         "the dashboard quits; in-process: in the dashboard; auto (default): "
                         "detached on CUDA, else in-process")
    ui.add_argument("--attach", metavar="RUN_DIR",
                    help="follow a run's events live (a running one, from any terminal)")
    ui.add_argument("--serve", action="store_true", help="serve the dashboard to a web browser")
    ui.add_argument("--host", default="127.0.0.1", help="with --serve (default 127.0.0.1)")
    ui.add_argument("--port", type=int, default=8000, help="with --serve (default 8000)")
    ui.add_argument("--token", help="with --serve: the secret the browser must give (default: "
                                    "$BSNN_TUI_TOKEN, else a random one); printed in the URL")
    return p


def serve_command(argv: Sequence[str]) -> str:
    """The command textual-serve runs per browser session: these flags minus the serving ones
    (the token never goes on a command line that other users' `ps` shows)."""
    keep: list[str] = []
    skip_next = False
    for arg in argv:
        name, joined, _ = arg.partition("=")
        # argparse also takes an unambiguous abbreviation (--tok, --ser): strip those too
        flag = next((f for f in ("--host", "--port", "--token", "--serve")
                     if len(name) >= 4 and f.startswith(name)), None)
        if skip_next:
            skip_next = False
        elif flag is None:
            keep.append(arg)
        else:
            skip_next = flag != "--serve" and not joined
    return shlex.join([sys.executable, "-m", "bsnn_tui", *keep])
