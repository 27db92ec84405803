"""The one runner, fed from every face: the same events and figures from the CLI, the API with a
job dir, the dashboard's in-thread producer and a detached engine; and its error policy (a
failure mid-run, host out-of-memory, `bsnn cancel`) the same whichever face started the run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from test_detach import batches_done, wait_for
from torch.utils.data import Dataset

import bsnn
import bsnn.pipeline.sources
from bsnn.cli import main
from bsnn.config import RunConfig
from bsnn.detach import start_detached, wait_until_done
from bsnn.errors import DeviceError
from bsnn.events import BatchDone, Event, Phase
from bsnn.jobdir import list_runs
from bsnn.pipeline.runner import run
from bsnn.runfolder import TRACEBACK_FILE, RunFolder
from bsnn.summary import Summary
from bsnn_tui import producers
from bsnn_tui.feed import RunFeed

ROOT = Path(__file__).resolve().parents[1]
FLAGS = {"model": "bundled:digits-fp", "dataset": "digits", "time": 12, "eval_size": 96,
         "batch_size": 32, "norm": 32, "device": "cpu", "seed": 3}
pytestmark = pytest.mark.usefixtures("one_thread")


ROUNDED = ("correlation",)  # sums of floats: their last bit depends on the thread count


def figures(summary: Summary) -> dict[str, Any]:
    """What a run measured, without what differs between runs (ids, times, the config); the
    ANN-vs-SNN correlation to 12 digits (a detached engine runs on more threads)."""
    layers = [{k: round(v, 12) if k in ROUNDED and v is not None else v
               for k, v in layer.items()} for layer in summary["layers"]]
    return {**{k: summary[k] for k in ("images", "images_total", "ann_accuracy",
                                       "accuracy_per_step", "synops_per_image", "status")},
            "layers": layers}


def phases(events: list[Event]) -> list[str]:
    return [e.name for e in events if isinstance(e, Phase)]


def config(job_dir: Path, **changes: Any) -> RunConfig:
    return RunConfig(**{**FLAGS, "job_dir": str(job_dir), **changes})  # type: ignore[arg-type]


def only_run(job_dir: Path) -> RunFolder:
    (listed,) = list_runs(job_dir)
    return RunFolder.open(listed.run_dir)


def test_every_face_drives_the_same_runner(tmp_path: Path) -> None:
    """CLI, dashboard (in-thread), detached engine and API: the same figures, the same events;
    the API's model and thresholds come from `bsnn.convert`, so its run has no load_model phase
    and no calibration progress, and says where its thresholds came from."""
    cli = tmp_path / "cli"
    args = [f"--{k.replace('_', '-')}" if k != "eval_size" else "--eval_size" for k in FLAGS]
    argv = [x for k, v in zip(args, FLAGS.values(), strict=True) for x in (k, str(v))]
    assert main(["convert", *argv, "--job-dir", str(cli), "--quiet"]) == 0

    tui = tmp_path / "tui"
    feed = RunFeed()
    producers.run_engine(config(tui), feed, threading.Event())

    detached = tmp_path / "detached"
    assert wait_until_done(start_detached(config(detached)), 120) == "finished"

    api = tmp_path / "api"
    snn = bsnn.convert("bundled:digits-fp", "digits", norm=32, batch_size=32, device="cpu",
                       seed=3)
    bsnn.simulate(snn, "digits", time=12, eval_size=96, batch_size=32, device="cpu", seed=3,
                  job_dir=api)

    folders = {name: only_run(tmp_path / name) for name in ("cli", "tui", "detached", "api")}
    summaries = {name: f.summary() for name, f in folders.items()}
    for name, summary in summaries.items():
        assert figures(summary) == figures(summaries["cli"]), name
        assert (f := folders[name]).path.joinpath("summary.json").is_file(), name
        assert len((f.path.parent / "results" / "sim_result.txt").read_text().splitlines()) == 2
    events = {name: f.events() for name, f in folders.items()}
    full = ["load_model", "load_data", "threshold_calibration", "simulate"]
    for name in ("cli", "tui", "detached"):
        assert phases(events[name]) == full, name
        assert [e.type for e in events[name]] == [e.type for e in events["cli"]], name
    assert phases(events["api"]) == ["load_data", "threshold_calibration", "simulate"]
    assert [e.type for e in events["api"] if e.type not in ("phase", "progress")] == [
        e.type for e in events["cli"] if e.type not in ("phase", "progress")]


class Breaks(Dataset[tuple[torch.Tensor, int]]):
    """A data set whose image `at` raises `error` (a corrupt file, memory running out)."""

    def __init__(self, images: Any, at: int, error: BaseException) -> None:
        self.images, self.at, self.error = images, at, error

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i == self.at:
            raise self.error
        return self.images[i]


def breaking_eval_set(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """Every config-driven run judges images that raise `error` at image 50 (its 2nd batch)."""
    real = bsnn.pipeline.sources.eval_subset
    monkeypatch.setattr(bsnn.pipeline.sources, "eval_subset",
                        lambda images, n: Breaks(real(images, n), 50, error))


def assert_failed_with_traceback(job_dir: Path, message: str, raised: str = "") -> Summary:
    """The run lists `failed` with `message`, its summary.json says so, and one traceback file
    holds the error that was `raised` (default: the message)."""
    folder = only_run(job_dir)
    summary = folder.summary()
    assert summary.status == "failed" and summary.error is not None
    assert message in summary.error["message"]
    assert summary.images == 32  # the batch before the failure is kept
    saved = json.loads((folder.path / "summary.json").read_text())
    assert saved["status"] == "failed"
    tracebacks = [p for p in folder.path.iterdir() if "traceback" in p.name or "error" in p.name]
    assert tracebacks == [folder.path / TRACEBACK_FILE]
    assert (raised or message) in tracebacks[0].read_text()
    return summary


def test_a_failure_mid_run_is_failed_in_every_face(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Data that raises at image 50: the API raises to its caller, the CLI exits non-zero,
    the dashboard's producer raises to the app, and every folder lists `failed` with its
    summary and one traceback."""
    breaking_eval_set(monkeypatch, OSError("image file is truncated"))
    argv = ["convert", "--model", "bundled:digits-fp", "--time", "8", "--eval_size", "96",
            "--batch-size", "32", "--norm", "32", "--device", "cpu", "--quiet"]
    assert main([*argv, "--job-dir", str(tmp_path / "cli")]) == 2  # one line, not a traceback
    assert_failed_with_traceback(tmp_path / "cli", "truncated")

    with pytest.raises(OSError, match="truncated"):
        producers.run_engine(config(tmp_path / "tui"), RunFeed(), threading.Event())
    assert_failed_with_traceback(tmp_path / "tui", "truncated")

    snn = bsnn.convert("bundled:digits-fp", "digits", norm=32, device="cpu")
    images, _ = bsnn.pipeline.sources.named_split("digits", "val", snn.meta, {
        "normalize": None, "data": None, "val_split": None, "seed": 0, "image_size": None})
    with pytest.raises(OSError, match="truncated"):
        bsnn.simulate(snn, Breaks(images, 50, OSError("image file is truncated")), time=8,
                      eval_size=96, batch_size=32, device="cpu", job_dir=tmp_path / "api")
    assert_failed_with_traceback(tmp_path / "api", "truncated")


def test_host_out_of_memory_is_failed_with_one_traceback(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """MemoryError mid-run becomes a DeviceError naming a smaller batch; an export that fails
    while failing (memory still short) is a warning in the log, never a second error."""
    breaking_eval_set(monkeypatch, MemoryError())
    real_figure = bsnn.exports.accuracy_figure

    def no_memory(summary: Summary) -> Any:
        if summary.status == "failed":
            raise MemoryError
        return real_figure(summary)

    monkeypatch.setattr(bsnn.exports, "accuracy_figure", no_memory)
    with pytest.raises(DeviceError, match="the host ran out of memory at batch size 32"):
        run(config(tmp_path))
    summary = assert_failed_with_traceback(tmp_path, "ran out of memory", raised="MemoryError")
    assert "smaller --batch-size" in summary.error["fix"]  # type: ignore[index]
    assert any("accuracy.png" in w and "MemoryError" in w for w in summary.warnings)


SLOW_API_RUN = """
import sys, time
import bsnn
from torch.utils.data import Dataset
from bsnn.pipeline.sources import named_split

class Slow(Dataset):
    def __init__(self, images): self.images = images
    def __len__(self): return len(self.images)
    def __getitem__(self, i):
        time.sleep(0.01)
        return self.images[i]

snn = bsnn.convert("bundled:digits-fp", "digits", norm=32, device="cpu")
images, _ = named_split("digits", "val", snn.meta, {"normalize": None, "data": None,
                        "val_split": None, "seed": 0, "image_size": None})
summary = bsnn.simulate(snn, Slow(images), time=8, batch_size=16, device="cpu",
                        job_dir=sys.argv[1], run_id="api")
print("STATUS", summary.status, summary.images)
"""


def test_bsnn_cancel_stops_an_api_run_in_another_process(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SLOW_API_RUN),
                             str(tmp_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        run_dir = tmp_path / "api"
        wait_for(lambda: batches_done(run_dir) >= 1 or proc.poll() is not None)
        assert main(["cancel", str(run_dir), "--timeout", "60"]) == 0
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    summary = RunFolder.open(run_dir).summary()
    assert summary.status == "cancelled" and f"STATUS cancelled {summary.images}" in out
    assert summary.images < 360 - 16  # it stopped within a batch, long before the end


def test_bsnn_cancel_stops_a_dashboard_run_in_process(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's in-thread producer: the runner reads the cancel marker itself."""
    real = bsnn.pipeline.sources.eval_subset

    class Slow(Breaks):
        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            time.sleep(0.01)
            return self.images[i]

    monkeypatch.setattr(bsnn.pipeline.sources, "eval_subset",
                        lambda images, n: Slow(real(images, n), -1, MemoryError()))
    feed = RunFeed()
    done: list[Summary] = []
    worker = threading.Thread(target=lambda: done.append(producers.run_engine(
        config(tmp_path, eval_size=-1, batch_size=16), feed, threading.Event())))
    worker.start()
    wait_for(lambda: any(isinstance(e, BatchDone) for e in feed.events()))
    assert main(["cancel", str(feed.run_dir), "--timeout", "60"]) == 0
    worker.join(60)
    (summary,) = done
    assert summary.status == "cancelled" and summary.images < 360 - 16
