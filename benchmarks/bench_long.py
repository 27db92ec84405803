"""Long runs and many runs: memory of a long run's engine and of a dashboard attached to it, and
the time to list a job dir of many runs.

    python benchmarks/bench_long.py                     # what fits a small CPU: 2,000 images, T=256
    python benchmarks/bench_long.py --full              # the issue's case: 10,000 images, T=1024
    python benchmarks/bench_long.py --runs 1000 --skip-memory

Memory: a detached engine (a process of its own, as `bsnn convert --detach`) runs a model the
size of the bundled one (vgg8ab at width 0.125: 8 to 32 channels, random weights, whose
accuracy does not matter here) on real CIFAR-10 images (../shared/data/cifar10-2k, 20,000; the
bundled digits have only 360 to evaluate); a dashboard follows it (`bsnn-tui --attach`,
headless, in a process of its own). Each process's peak resident memory (VmHWM) is read when the
run passes 10 % and 100 % of its images; flat means the two are within 10 %.

Many runs: a real run folder is copied N times (its log's run id rewritten, as `bsnn convert`
writes them), then `bsnn runs --json`, bsnn.jobdir.list_runs and the dashboard's runs screen
are timed on that job dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory

ROOT = Path(__file__).resolve().parents[1]
TARGET_GROWTH = 0.10
TARGET_LIST_S = 1.0


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set so far (VmHWM), in MB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def images_done(run_dir: Path) -> tuple[int, int]:
    """(images done, images in all) from the run's log: its last batch line."""
    log = run_dir / "events.jsonl"
    if not log.is_file():
        return 0, 0
    with open(log, "rb") as f:
        f.seek(0, 2)
        f.seek(max(0, f.tell() - 1_000_000))
        lines = f.read().decode("utf-8", "replace").splitlines()
    for line in reversed(lines):
        if '"batch_done"' in line:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            return event["images"], event["images_total"]
    return 0, 0


def long_run_inputs(images_dir: Path, tmp: Path) -> tuple[Path, Path]:
    """A small random vgg8ab checkpoint, and a data folder whose val/ (what a run evaluates) and
    train/ (calibration) are both the real images."""
    import torch

    from bsnn.checkpoint import ModelMeta, save_checkpoint
    from bsnn.data import IMAGENET_MEAN, IMAGENET_STD
    from bsnn.models import build_model

    torch.manual_seed(0)
    model = build_model("vgg8ab", 10, (3, 32, 32), width=0.125)
    checkpoint = tmp / "vgg8ab-w0.125.pt"
    save_checkpoint(checkpoint, model, ModelMeta(
        arch="vgg8ab", dataset="imagefolder", num_classes=10, input_shape=(3, 32, 32),
        mean=tuple(IMAGENET_MEAN), std=tuple(IMAGENET_STD), width=0.125))
    data = tmp / "data"
    data.mkdir()
    for split in ("train", "val"):
        (data / split).symlink_to(images_dir.resolve())
    return checkpoint, data


def memory_case(images: int, steps: int, batch: int, job_dir: Path,
                images_dir: Path) -> dict[str, float]:
    """Peak RSS (VmHWM) of the engine and of an attached dashboard when the run passes 10 % and
    100 % of its images, read while each process is alive. (Not wait4's ru_maxrss: Linux
    counts in it the forking parent's resident set from before the exec.)"""
    run_dir = job_dir / "long"
    job_dir.mkdir(parents=True)
    checkpoint, data = long_run_inputs(images_dir, job_dir)
    engine = subprocess.Popen(
        [sys.executable, "-m", "bsnn", "convert", "--model", str(checkpoint),
         "--dataset", "imagefolder", "--data", str(data),
         "--eval_size", str(images), "--time", str(steps), "--batch-size", str(batch),
         "--job-dir", str(job_dir), "--run-id", "long", "--device", "cpu"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (run_dir / "events.jsonl").is_file():
        time.sleep(0.2)
    dash = subprocess.Popen([sys.executable, "-c", DASHBOARD, str(run_dir), "100", "30"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marks: dict[str, float] = {}
    while not (ended := os.wait4(engine.pid, os.WNOHANG))[0]:
        done, total = images_done(run_dir)
        mark = "100" if total and done >= total else "10" if total and done >= total / 10 else ""
        if mark and f"engine_{mark}" not in marks and (rss := peak_rss_mb(engine.pid)):
            marks.update({f"engine_{mark}": rss, f"dash_{mark}": peak_rss_mb(dash.pid)})
        time.sleep(0.05)
    engine.returncode = os.waitstatus_to_exitcode(ended[1])
    done, total = images_done(run_dir)
    if engine.returncode != 0 or "engine_10" not in marks or not total or done < total:
        dash.kill()
        raise SystemExit(f"the long run ended (exit {engine.returncode}) at {done} of {total} "
                         f"images, or before its 10 % mark was seen: see {run_dir}/events.jsonl")
    time.sleep(2)  # the dashboard reads the last lines
    marks["dash_100"] = peak_rss_mb(dash.pid)
    dash.terminate()
    dash.wait(timeout=30)
    return marks


# A dashboard that follows a run headless (argv: the run folder, width, height) and stays until
# it is ended.
DASHBOARD = """
import asyncio, sys
from pathlib import Path
from bsnn.config import RunConfig
from bsnn_tui.app import BsnnApp

async def main():
    app = BsnnApp(RunConfig(job_dir=str(Path(sys.argv[1]).parent)), attach=Path(sys.argv[1]))
    async with app.run_test(size=(int(sys.argv[2]), int(sys.argv[3]))):
        while True:
            await asyncio.sleep(1)

asyncio.run(main())
"""


def many_runs(n: int, job_dir: Path) -> Path:
    """A job dir of `n` copies of one real run folder, each log naming its own run id."""
    template = job_dir / "template"
    subprocess.run([sys.executable, "-m", "bsnn", "convert", "--model", "bundled:digits-fp",
                    "--eval_size", "64", "--time", "32", "--job-dir", str(template),
                    "--run-id", "run-0000", "--device", "cpu"],
                   cwd=ROOT, check=True, capture_output=True)
    source = template / "run-0000"
    lines = (source / "events.jsonl").read_text().splitlines()
    runs = job_dir / "many"
    for i in range(n):
        run_id = f"run-{i:04d}"
        target = runs / run_id
        shutil.copytree(source, target)
        started = json.loads(lines[0])
        started.update(run_id=run_id, run_dir=str(target))
        (target / "events.jsonl").write_text("\n".join([json.dumps(started), *lines[1:]]) + "\n")
    return runs


def time_listing(runs: Path, n: int) -> dict[str, float]:
    """Seconds for `bsnn runs --json` (process start included), list_runs, and the runs screen
    from the key press to its first screenful of rows and to its table holding every run."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "bsnn", "runs", str(runs), "--json"], cwd=ROOT,
                   check=True, capture_output=True)
    cli = time.perf_counter() - t
    from bsnn.jobdir import list_runs

    t = time.perf_counter()
    assert len(list_runs(runs)) == n
    api = time.perf_counter() - t
    first, every = runs_screen(runs, n)
    return {"bsnn runs --json": cli, "list_runs": api, "runs screen: first rows": first,
            "runs screen: all rows": every}


def runs_screen(runs: Path, n: int) -> tuple[float, float]:
    from textual.widgets import DataTable

    from bsnn.config import RunConfig
    from bsnn_tui.app import BsnnApp
    from bsnn_tui.screens.runs import FIRST_ROWS

    async def rows_reach(app: BsnnApp, count: int, t: float) -> float:
        while not app.screen.query(DataTable) or \
                app.screen.query_one(DataTable).row_count < count:
            await asyncio.sleep(0.005)
        return time.perf_counter() - t

    async def drive() -> tuple[float, float]:
        app = BsnnApp(RunConfig(job_dir=str(runs)))
        async with app.run_test(size=(100, 30)) as pilot:
            await pilot.press("escape")
            t = time.perf_counter()
            # watched beside the key press, which itself returns only once the app is idle
            first = asyncio.create_task(rows_reach(app, min(n, FIRST_ROWS), t))
            every = asyncio.create_task(rows_reach(app, n, t))
            await pilot.press("r")
            return await first, await every

    return asyncio.run(drive())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", action="store_true", help="10,000 images at T=1024 (hours on CPU)")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--images-dir", type=Path, default=ROOT.parent / "shared/data/cifar10-2k/train",
                   help="a folder of class folders of images (default: ../shared/data/cifar10-2k)")
    p.add_argument("--time", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-listing", action="store_true")
    args = p.parse_args()
    images, steps = (10_000, 1024) if args.full else (args.images, args.time)
    with TemporaryDirectory() as tmp:
        if not args.skip_memory:
            m = memory_case(images, steps, args.batch_size, Path(tmp) / "long", args.images_dir)
            print(f"long run: vgg8ab x0.125 on {args.images_dir}, {images:,} images, T={steps}, "
                  f"batch {args.batch_size}; peak resident MB")
            print(f"  {'':7} {'at 10 %':>8} {'at 100 %':>9} {'growth':>7}")
            for who in ("engine", "dash"):
                a, b = m.get(f"{who}_10", 0.0), m.get(f"{who}_100", 0.0)
                growth = f"{b / a - 1:+7.1%}" if a and b else "   —   "
                print(f"  {who:7} {a:8.1f} {b:9.1f} {growth}   "
                      f"(target: growth within {TARGET_GROWTH:.0%})")
        if not args.skip_listing:
            runs = many_runs(args.runs, Path(tmp))
            print(f"job dir of {args.runs:,} runs (copies of a finished T=32 run)")
            for name, seconds in time_listing(runs, args.runs).items():
                print(f"  {name:24} {seconds:7.2f} s   (target < {TARGET_LIST_S:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
