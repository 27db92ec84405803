"""The dashboard's cost to a run, measured inside the run.

    python benchmarks/bench_watch.py [--mode both] [--window 3] [--runs 2] [--time 1024]

Whole runs minutes apart on a shared machine differ by 10 % and more (benchmarks/RESULTS.md),
more than the 5 % the dashboard may cost, so comparing whole runs (bench_tui.py --throughput)
cannot tell. Here one long run is watched for `window` seconds, then not, in turns; each
batch counts for the state it ran in, and a batch that straddles a switch is dropped, so the
batches compared ran seconds apart on the same machine.

detached: the engine is a process of its own (`bsnn convert`, as --detach starts it; the CUDA
    default); a dashboard follows it (`bsnn-tui --attach`, headless, 80x24) and is stopped
    (SIGSTOP) while not watching: then it costs exactly what no dashboard costs.
in-process: the dashboard runs the engine in its own thread (the CPU default) and shows it;
    while not watching, the run screen skips its redraws and the app idles on it (its event
    loop still wakes four times a second).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from itertools import pairwise
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_long import DASHBOARD  # noqa: E402  (a headless viewer of a run folder)

TARGET = 0.95  # images/s watched over not watched


def batches(run_dir: Path) -> list[tuple[float, float, int]]:
    """(start, end, images) of every batch but the first (which warms up), from the run's log."""
    from bsnn.events import BatchDone
    from bsnn.runlog import read_events

    done = [e for e in read_events(run_dir) if isinstance(e, BatchDone)]
    return [(b.time, e.time, e.images - b.images) for b, e in pairwise(done)]


def split(run: list[tuple[float, float, int]],
          switches: list[tuple[float, bool]]) -> dict[bool, list[tuple[float, int]]]:
    """Each batch's (seconds, images) under the state it ran in, by the switches' times;
    batches across a switch are left out."""
    out: dict[bool, list[tuple[float, int]]] = {True: [], False: []}
    for start, end, images in run:
        before = [state for at, state in switches if at <= start]
        if before and not any(start < at < end for at, _ in switches):
            out[before[-1]].append((end - start, images))
    return out


def take_turns(window: float, watch: Callable[[bool], None], running: Callable[[], bool],
               ) -> list[tuple[float, bool]]:
    """Watch and stop watching every `window` seconds while the run goes; the switch times."""
    switches: list[tuple[float, bool]] = []
    state = True
    while running():
        watch(state)
        switches.append((time.time(), state))
        end = time.time() + window
        while time.time() < end and running():
            time.sleep(0.02)
        state = not state
    watch(True)
    return switches


def engine_argv(config: dict[str, Any], job_dir: Path, run_id: str) -> list[str]:
    return [sys.executable, "-m", "bsnn", "convert", "--model", config["model"],
            "--eval_size", str(config["eval_size"]), "--time", str(config["time"]),
            "--batch-size", str(config["batch_size"]), "--device", "cpu",
            "--job-dir", str(job_dir), "--run-id", run_id, "--quiet"]


def detached_run(config: dict[str, Any], job_dir: Path, run_id: str, window: float,
                 ) -> dict[bool, list[tuple[float, int]]]:
    """One detached run, its viewer stopped and continued in turns."""
    run_dir = job_dir / run_id
    engine = subprocess.Popen(engine_argv(config, job_dir, run_id), cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (run_dir / "events.jsonl").is_file():
        time.sleep(0.1)
    viewer = subprocess.Popen([sys.executable, "-c", DASHBOARD, str(run_dir), "80", "24"],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while '"simulate"' not in (run_dir / "events.jsonl").read_text():
        time.sleep(0.1)

    def watch(on: bool) -> None:
        viewer.send_signal(signal.SIGCONT if on else signal.SIGSTOP)

    switches = take_turns(window, watch, lambda: engine.poll() is None)
    viewer.terminate()
    viewer.wait(timeout=30)
    if engine.returncode != 0:
        raise SystemExit(f"the engine exited {engine.returncode}: see {run_dir}")
    return split(batches(run_dir), switches)


def in_process_run(config: dict[str, Any], job_dir: Path, run_id: str, window: float,
                   ) -> dict[bool, list[tuple[float, int]]]:
    """One run started from the app, in-process; its run screen redraws only while watched."""
    import threading
    from dataclasses import replace

    from bsnn.config import RunConfig
    from bsnn_tui.app import BsnnApp
    from bsnn_tui.screens.run import RunScreen

    watching = threading.Event()
    redraw = RunScreen.redraw
    RunScreen.redraw = lambda self: redraw(self) if watching.is_set() else None  # type: ignore
    run_config = replace(RunConfig.from_dict(config), job_dir=str(job_dir), run_id=run_id)
    result: dict[str, Any] = {}

    async def drive() -> None:
        app = BsnnApp(run_config, run_mode="in-process")
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.press("escape", "ctrl+s")
            log = job_dir / run_id / "events.jsonl"
            while not log.is_file() or '"simulate"' not in log.read_text():
                await asyncio.sleep(0.1)
            loop = asyncio.get_running_loop()
            result["switches"] = await loop.run_in_executor(None, take_turns, window, (
                lambda on: watching.set() if on else watching.clear()),
                lambda: app.live is not None and app.live.active)

    try:
        asyncio.run(drive())
    finally:
        RunScreen.redraw = redraw  # type: ignore[method-assign]
    return split(batches(job_dir / run_id), result["switches"])


def report(mode: str, states: dict[bool, list[tuple[float, int]]]) -> dict[str, Any]:
    """Images/s of the batches watched and not watched, and their ratio."""
    speed = {on: sum(n for _, n in rows) / sum(s for s, _ in rows) for on, rows in
             states.items()}
    ratio = speed[True] / speed[False]
    per_batch = {on: statistics.median(n / s for s, n in rows) for on, rows in states.items()}
    print(f"{mode:11} watched {speed[True]:7.1f} images/s ({len(states[True])} batches), "
          f"not watched {speed[False]:7.1f} ({len(states[False])}): {ratio:6.1%} "
          f"(median batch {per_batch[True] / per_batch[False]:6.1%}; target >= {TARGET:.0%})")
    return {"mode": mode, "watched_images_per_s": speed[True],
            "unwatched_images_per_s": speed[False], "ratio": ratio,
            "median_batch_ratio": per_batch[True] / per_batch[False],
            "batches": {"watched": len(states[True]), "unwatched": len(states[False])}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", choices=("detached", "in-process", "both"), default="both")
    p.add_argument("--window", type=float, default=3.0, help="seconds watched, then not")
    p.add_argument("--runs", type=int, default=2, help="runs per mode")
    p.add_argument("--model", default="bundled:digits-fp")
    p.add_argument("--eval-size", type=int, default=-1)
    p.add_argument("--time", type=int, default=1024)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--json", type=Path, help="also write the figures here")
    args = p.parse_args()
    config = {"model": args.model, "eval_size": args.eval_size, "time": args.time,
              "batch_size": args.batch_size, "device": "cpu"}
    modes = ("detached", "in-process") if args.mode == "both" else (args.mode,)
    print(f"{args.model}, T={args.time}, batch {args.batch_size}, {args.runs} runs per mode, "
          f"watched and not in turns of {args.window:g} s")
    rows = []
    with TemporaryDirectory() as tmp:
        for mode in modes:
            states: dict[bool, list[tuple[float, int]]] = {True: [], False: []}
            for i in range(args.runs):
                run = detached_run if mode == "detached" else in_process_run
                for on, got in run(config, Path(tmp), f"{mode}-{i}", args.window).items():
                    states[on] += got
            rows.append(report(mode, states))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
