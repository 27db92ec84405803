"""Detached runs in real processes: SIGHUP, kill -9, cancel, torn logs, two runs at once."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bsnn.cli import main
from bsnn.config import RunConfig
from bsnn.detach import ENGINE_LOG, start_detached, wait_until_done
from bsnn.errors import CheckpointError
from bsnn.events import BatchDone, Cancelled, Started
from bsnn.exports import EXPORT_FILES
from bsnn.runfolder import CANCEL_FILE, RunFolder
from bsnn.runlog import read_events
from bsnn.summary import summarize

DIGITS_VAL = 360  # images in the digits evaluation split


def config(model: Path, job_dir: Path, **changes: object) -> RunConfig:
    """A small run; `time` and `eval_size` make it last long enough to be interrupted."""
    base = {"model": str(model), "dataset": "digits", "time": 16, "eval_size": 64,
            "batch_size": 16, "norm": 32, "n_workers": 0, "job_dir": str(job_dir)}
    return RunConfig(**{**base, **changes})  # type: ignore[arg-type]


def wait_for(predicate: object, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def batches_done(run_dir: Path) -> int:
    """Batches the run has logged so far (none before its log exists)."""
    if not (run_dir / "events.jsonl").is_file():
        return 0
    return sum(isinstance(e, BatchDone) for e in read_events(run_dir))


def engine_pid(run_dir: Path) -> int:
    (started,) = [e for e in read_events(run_dir) if isinstance(e, Started)]
    return int(started.pid or 0)


def test_sighup_does_not_stop_a_detached_run(tiny_model: Path, tmp_path: Path) -> None:
    run_dir = start_detached(config(tiny_model, tmp_path, time=128, eval_size=-1))
    pid = engine_pid(run_dir)
    assert pid != os.getpid()
    assert os.getsid(pid) == pid != os.getsid(0)  # a session of its own: no controlling tty
    wait_for(lambda: batches_done(run_dir) >= 1)
    assert RunFolder.open(run_dir).status() == "running"
    os.killpg(pid, signal.SIGHUP)  # what a closing terminal sends
    assert wait_until_done(run_dir, timeout_s=120) == "finished"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["images"] == DIGITS_VAL
    for name in EXPORT_FILES:
        assert (run_dir / name).is_file(), name
    assert "started run" in (run_dir / ENGINE_LOG).read_text()
    assert not list(tmp_path.glob(".*"))  # the early log was moved into the run folder


@pytest.fixture(scope="module")
def killed_run(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A detached run killed with SIGKILL after its first batch."""
    job = tmp_path_factory.mktemp("killed")
    run_dir = start_detached(config(tiny_model, job, time=1024, eval_size=-1))
    wait_for(lambda: batches_done(run_dir) >= 1)
    os.killpg(engine_pid(run_dir), signal.SIGKILL)
    wait_for(lambda: RunFolder.open(run_dir).status() == "interrupted", timeout_s=30)
    return run_dir


def test_kill_9_loses_at_most_the_batch_in_flight(
        killed_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    events = read_events(killed_run)
    last = [e for e in events if isinstance(e, BatchDone)][-1]
    assert 0 < last.images < DIGITS_VAL
    assert not (killed_run / "summary.json").exists()  # nobody was left to write it
    assert main(["report", str(killed_run)]) == 0
    assert "interrupted" in capsys.readouterr().out
    summary = json.loads((killed_run / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["images"] == last.images
    assert len(summary["accuracy_per_step"]) == 1024
    assert (killed_run / "per_timestep.csv").is_file()
    capsys.readouterr()
    assert main(["runs", str(killed_run.parent)]) == 0
    assert "interrupted" in capsys.readouterr().out


def test_torn_last_line_is_tolerated(killed_run: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    before = read_events(killed_run)
    with open(killed_run / "events.jsonl", "a") as f:
        f.write('{"type":"batch_done","batch":999,"images":9')  # a write cut short
    assert read_events(killed_run) == before
    assert summarize(read_events(killed_run))["status"] == "interrupted"
    assert main(["report", str(killed_run)]) == 0
    assert "Traceback" not in capsys.readouterr().err


def test_cancel_stops_a_detached_run_within_a_batch(
        tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["convert", "--detach", "--model", str(tiny_model), "--dataset", "digits",
            "--time", "1024", "--eval_size", "-1", "--batch-size", "16", "--norm", "32",
            "--job-dir", str(tmp_path)]
    assert main(argv) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "bsnn-tui --attach" in out and "bsnn cancel" in out
    (log,) = tmp_path.glob("*/events.jsonl")
    run_dir = log.parent
    assert str(run_dir.name) in out
    wait_for(lambda: batches_done(run_dir) >= 1)
    assert main(["cancel", str(run_dir)]) == 0
    assert "run cancelled" in capsys.readouterr().out
    events = read_events(run_dir)
    assert isinstance(events[-1], Cancelled)
    done = [e for e in events if isinstance(e, BatchDone)]
    assert events[-1].images == done[-1].images < DIGITS_VAL
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "cancelled" and summary["images"] == done[-1].images
    assert "cancelled" in (run_dir / ENGINE_LOG).read_text()


def test_two_runs_started_at_once_never_clobber_each_other(tiny_model: Path,
                                                           tmp_path: Path) -> None:
    barrier = threading.Barrier(2)
    dirs: list[Path] = []

    def start() -> None:
        barrier.wait()
        dirs.append(start_detached(config(tiny_model, tmp_path), wait_for=None))

    threads = [threading.Thread(target=start) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(dirs) == 2 and dirs[0] != dirs[1]
    for run_dir in dirs:
        assert wait_until_done(run_dir, timeout_s=120) == "finished"
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["run_id"] == run_dir.name and summary["images"] == 64
    lines = (tmp_path / "results" / "sim_result.txt").read_text().splitlines()
    assert len(lines) == 3 and lines[0].startswith("seed,")
    assert not list(tmp_path.glob("*/.*.tmp"))  # atomic writes left no temp files behind


def test_detached_bad_input_fails_before_returning(tmp_path: Path) -> None:
    (tmp_path / "bad.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError) as info:
        start_detached(config(tmp_path / "bad.pt", tmp_path / "job"))
    assert "bad.pt" in info.value.message


def test_cancel_marker(tmp_path: Path) -> None:
    assert not RunFolder(tmp_path).cancel_requested()
    RunFolder(tmp_path).request_cancel()
    assert RunFolder(tmp_path).cancel_requested()
    assert [p.name for p in tmp_path.iterdir()] == [CANCEL_FILE]  # no temp file left


@pytest.fixture(autouse=True)
def _no_stray_engines(tmp_path: Path) -> Iterator[None]:
    """Kill any engine a failed test left running, so it does not outlive the suite."""
    yield
    for log in tmp_path.glob("**/events.jsonl"):
        started = [e for e in read_events(log) if isinstance(e, Started)]
        if started and started[0].pid and RunFolder.open(log.parent).status() == "running":
            os.killpg(started[0].pid, signal.SIGKILL)
