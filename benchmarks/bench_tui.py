"""Dashboard benchmarks: time to first paint, and a run's throughput with the dashboard attached
against the same run headless.

    python benchmarks/bench_tui.py [--repeat 5]
    python benchmarks/bench_tui.py --throughput [--model bundled:digits-fp --eval-size 360 ...]
    python benchmarks/bench_tui.py --screenshot docs/screenshot-run.svg

Whole runs, minutes apart, vary by more than the 5 % the dashboard may cost on a shared machine:
bench_watch.py measures that cost inside one run. The comparison here is kept for gpu_check.sh.

First paint is measured from the moment the process is spawned (interpreter start-up included)
to the app's Ready event (the first screen composed and drawn), headless at 80x24, in a fresh
process each time; it also records whether torch had been imported by then (it must not be).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_watch import batches  # noqa: E402  (each batch's start, end and images)

TARGET_FIRST_PAINT_S = 1.0
TARGET_THROUGHPUT = 0.95  # dashboard-attached images/s over headless
MODES = {"headless": "headless (bsnn.pipeline.runner.run)",
         "in-process": "dashboard, engine in-process",
         "detached": "dashboard, engine detached"}

PROBE = """
import json, sys, time
t0 = time.time()
import bsnn_tui.app
imported = time.time()
from pathlib import Path

class Probe(bsnn_tui.app.BsnnApp):
    CSS_PATH = str(Path(bsnn_tui.app.__file__).with_name("app.tcss"))

    def on_ready(self):
        self.painted = time.time()
        self.torch = "torch" in sys.modules
        self.exit()

app = Probe()
app.run(headless=True, size=(80, 24))
print(json.dumps({"t0": t0, "imported": imported, "painted": app.painted,
                  "torch": app.torch}))
"""


def first_paint(repeat: int) -> list[dict[str, float]]:
    """Seconds from spawn to interpreter, to `import bsnn_tui.app`, to the first paint."""
    rows = []
    for _ in range(repeat):
        spawned = time.time()
        out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                             check=True, cwd=ROOT)
        probe = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append({
            "interpreter_s": probe["t0"] - spawned,
            "import_s": probe["imported"] - probe["t0"],
            "first_paint_s": probe["painted"] - spawned,
            "torch_loaded": probe["torch"],
        })
    return rows


def print_first_paint(rows: list[dict[str, float]]) -> None:
    med = {k: statistics.median(r[k] for r in rows) for k in ("interpreter_s", "import_s",
                                                              "first_paint_s")}
    worst = max(r["first_paint_s"] for r in rows)
    torch_loaded = any(r["torch_loaded"] for r in rows)
    print(f"time to first paint, {len(rows)} fresh processes, headless 80x24")
    print(f"{'':28} {'median':>8}")
    print(f"{'interpreter start-up':28} {med['interpreter_s']:8.3f} s")
    print(f"{'import bsnn_tui.app':28} {med['import_s']:8.3f} s")
    print(f"{'spawn -> first paint':28} {med['first_paint_s']:8.3f} s   (worst {worst:.3f} s, "
          f"target <= {TARGET_FIRST_PAINT_S:.1f} s)")
    print(f"{'torch imported by then':28} {'yes' if torch_loaded else 'no':>8}")


def batch_seconds(run_dir: Path, batch_size: int) -> list[float]:
    """Seconds of each full batch of a run but its first (which warms up), from its log."""
    return [end - start for start, end, images in batches(run_dir) if images == batch_size]


def measure(mode: str, config_dict: dict[str, Any], runs: int) -> list[dict[str, Any]]:
    """`runs` runs in a row, each as its simulation images/s and its batches' seconds:
    "headless" calls `bsnn.pipeline.runner.run` in this process; "in-process" and "detached"
    start them one after another from the app (headless Pilot) in that run mode, its panels
    redrawing as in a terminal."""
    from bsnn.config import RunConfig
    from bsnn.summary import summarize

    config = RunConfig.from_dict(config_dict)
    if mode == "headless":
        from bsnn.pipeline.runner import run

        summaries = [run(config) for _ in range(runs)]
        return [{"images_per_s": float(s["images_per_s"]),
                 "batch_s": batch_seconds(Path(config.job_dir) / s["run_id"],
                                          config.batch_size)}
                for s in summaries]

    from bsnn_tui.app import BsnnApp

    async def attached() -> list[dict[str, Any]]:
        app = BsnnApp(config, run_mode=mode)
        rows = []
        async with app.run_test(size=(80, 24)) as pilot:
            for _ in range(runs):
                await pilot.press("escape", "ctrl+s")
                while app.live is None or app.live.active:
                    await asyncio.sleep(0.5)  # a person watching: no Pilot work meanwhile
                summary = summarize(app.live.events())
                if summary["status"] != "finished":
                    raise SystemExit(f"the dashboard run ended {summary['status']}: "
                                     f"{app.live.why_failed(summary)}")
                rows.append({"images_per_s": float(summary["images_per_s"]),
                             "batch_s": batch_seconds(app.live.run_dir, config.batch_size)})
                await pilot.press("n")
        return rows

    return asyncio.run(attached())


def compare_throughput(config: Any, repeat: int = 3,
                       runs: int = 3) -> dict[str, list[dict[str, Any]]]:
    """The same run headless and with the dashboard attached: `repeat` fresh processes per
    mode, alternating, each doing `runs` runs in a row (the first of each is a warm-up and
    dropped). Fresh processes, because torch's thread pools remember which threads used them:
    one process measuring both would slow whichever mode went second."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    measured: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    with TemporaryDirectory() as tmp:
        config_dict = replace(config, job_dir=tmp).to_dict()
        for _ in range(repeat):
            for mode in measured:
                with ctx.Pool(1) as pool:
                    measured[mode] += pool.apply(measure, (mode, config_dict, runs))[1:]
    return measured


def print_throughput(config: Any, measured: dict[str, list[dict[str, Any]]]) -> None:
    """Per mode: the median run's images/s (the target's figure) with the spread of runs
    (quartiles), and the median full batch's seconds, which a burst of load on a shared machine
    moves less than a whole run."""
    speeds = {mode: [r["images_per_s"] for r in rows] for mode, rows in measured.items()}
    batches = {mode: [t for r in rows for t in r["batch_s"]] for mode, rows in measured.items()}
    head = statistics.median(speeds["headless"])
    print(f"\nthroughput: {config.model}, {config.eval_size} images, T={config.time}, "
          f"batch {config.batch_size}, device {config.device}; median of "
          f"{len(speeds['headless'])} runs (simulation images/s)")
    for mode, label in MODES.items():
        run_speed = statistics.median(speeds[mode])
        line = f"{label:38} {run_speed:10.1f} images/s"
        if mode != "headless":
            line += (f"   {run_speed / head:6.1%} of headless (target >= "
                     f"{TARGET_THROUGHPUT:.0%})")
        print(line)
    if any(len(v) < 2 for v in speeds.values()) or not all(batches.values()):
        return  # too few runs for quartiles, or runs of one batch
    print(f"\n{'':38} {'runs: quartiles':>22} {'median batch':>13} {'of headless':>12}")
    for mode, label in MODES.items():
        q1, _, q3 = statistics.quantiles(speeds[mode], n=4)
        batch = statistics.median(batches[mode])
        print(f"{label:38} {q1:10.1f} - {q3:6.1f} /s {batch:11.3f} s "
              f"{statistics.median(batches['headless']) / batch:11.1%}   "
              f"({len(batches[mode])} batches)")


def screenshot(path: Path, config: Any, size: tuple[int, int] = (100, 30)) -> Path:
    """An SVG of the run screen once a real run of `config` has finished."""
    from bsnn_tui.app import BsnnApp

    async def shoot(cfg: Any) -> None:
        app = BsnnApp(cfg, start=True)
        async with app.run_test(size=size) as pilot:
            while app.live is None or app.live.active:
                await pilot.pause(0.05)
            await pilot.pause(0.5)  # one more redraw tick
            app.clear_notifications()
            await pilot.pause(0.1)
            app.save_screenshot(path.name, str(path.parent))

    with TemporaryDirectory() as tmp:
        asyncio.run(shoot(replace(config, job_dir=tmp, run_id="digits-fp-p99.7-T32")))
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--runs", type=int, default=3,
                   help="runs in a row per process and mode, the first a warm-up (at least 2)")
    p.add_argument("--throughput", action="store_true",
                   help="also compare a run's throughput with the dashboard vs headless")
    p.add_argument("--model", default="bundled:digits-fp")
    p.add_argument("--eval-size", type=int, default=-1)
    p.add_argument("--time", type=int, default=256)  # runs of seconds, not a blip
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--screenshot", type=Path, metavar="SVG",
                   help="only save an SVG of a finished run's screen (T=32) and exit")
    args = p.parse_args()
    from bsnn.config import RunConfig

    config = RunConfig(model=args.model, eval_size=args.eval_size, time=args.time,
                       batch_size=args.batch_size, device=args.device).validate()
    if args.screenshot:
        print(f"wrote {screenshot(args.screenshot, replace(config, time=32))}")
        return 0
    print_first_paint(first_paint(args.repeat))
    if args.throughput:
        print_throughput(config, compare_throughput(config, repeat=max(1, args.repeat // 2),
                                                        runs=max(2, args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
