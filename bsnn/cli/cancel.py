"""`bsnn cancel RUN_DIR`: stop a running run at its next batch boundary: any run with a run
folder (foreground, detached, the dashboard's, an API run with a job dir) reads the marker."""

from __future__ import annotations

import argparse
from pathlib import Path

from bsnn.errors import BsnnError, RunStorageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cancel", help="stop a running run at its next batch boundary",
                       description="Ask a run to stop; it writes `cancelled` and its partial "
                                   "summary. Waits until it has stopped unless --no-wait.")
    p.add_argument("run_dir", type=Path, help="the run's folder (see `bsnn runs`)")
    p.add_argument("--no-wait", action="store_true", help="return once the request is written")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="seconds to wait for the run to stop (default 600)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    from bsnn.detach import wait_until_done
    from bsnn.runfolder import RunFolder

    run_dir: Path = args.run_dir
    if not run_dir.is_dir():
        raise RunStorageError(f"no run folder {run_dir}",
                              "pass a run folder; `bsnn runs JOB_DIR` lists them")
    folder = RunFolder.open(run_dir)
    status = folder.status()
    if status != "running":
        hint = ("`bsnn report` rebuilds its partial summary" if status == "interrupted"
                else "nothing to cancel")
        raise BsnnError(f"run {run_dir} is not running: it is {status}", hint)
    folder.request_cancel()
    print(f"cancel requested: {run_dir} stops at the end of its current batch")
    if args.no_wait:
        return 0
    status = wait_until_done(run_dir, args.timeout)
    if status == "running":
        print(f"still running after {args.timeout:g} s; it will stop at its next batch boundary")
        return 1
    print(f"run {status}; summary in {run_dir}")
    return 0
