"""`bsnn convert --detach` says what it is doing while it waits for the run to be checked.

Each phase is printed as it passes (the engine starting, loading the model and data, each
threshold calibration pass), `--no-wait` returns once the engine has written its first event,
and Ctrl-C while it waits stops only the waiting: the run goes on, and the CLI says so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bsnn.cli import main
from bsnn.conversion import convert
from bsnn.detach import wait_until_done
from bsnn.events import Phase, Progress, Started
from bsnn.models import build_model
from bsnn.runlog import read_events

REPO = Path(__file__).resolve().parent.parent
SMALL = ["--time", "4", "--eval_size", "32", "--batch-size", "16", "--norm", "32",
         "--n-workers", "0", "--device", "cpu"]


def _as_foreground_job() -> None:
    """A terminal's foreground job takes Ctrl-C; a shell's background job (pytest started
    with `&`) ignores SIGINT, and its children inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def detach(model: Path, job: Path, *flags: str) -> subprocess.Popen[str]:
    """`bsnn convert --detach` in a session of its own, as a terminal's foreground job."""
    cmd = [sys.executable, "-m", "bsnn", "convert", "--model", str(model), "--job-dir", str(job),
           "--run-id", "r", "--detach", *SMALL, *flags]
    env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=_as_foreground_job)


def lines_until_exit(proc: subprocess.Popen[str]) -> list[tuple[float, str]]:
    """Each output line with the seconds since the start at which it arrived."""
    t0 = time.monotonic()
    assert proc.stdout is not None
    out = [(time.monotonic() - t0, line.rstrip()) for line in proc.stdout]
    proc.wait(timeout=60)
    return out


def position(lines: list[tuple[float, str]], text: str) -> int:
    return next(i for i, (_, line) in enumerate(lines) if text in line)


def test_detach_prints_each_phase_as_it_passes(tiny_model: Path, tmp_path: Path) -> None:
    proc = detach(tiny_model, tmp_path)
    lines = lines_until_exit(proc)
    assert proc.returncode == 0, lines
    said = [position(lines, text) for text in (
        "starting run r in the background", "engine pid", "started run r on cpu",
        "load_model: loading", "load_data: loading digits", "resolved: vgg6ab",
        "threshold_calibration: 99.7th percentile", "pass 1 over 32 images",
        "layers' percentiles exact", "simulate: 32 images", "run started in the background")]
    assert said == sorted(said)
    # the first line comes before the engine has written anything, not after the checks
    assert lines[0][1].startswith("starting run r") and lines[0][0] < lines[said[2]][0]
    assert wait_until_done(tmp_path / "r", timeout_s=120) == "finished"


def test_no_wait_returns_at_the_first_event(tiny_model: Path, tmp_path: Path) -> None:
    proc = detach(tiny_model, tmp_path, "--no-wait")
    lines = lines_until_exit(proc)
    assert proc.returncode == 0, lines
    text = "\n".join(line for _, line in lines)
    assert "started run r on cpu" in text and "run started in the background" in text
    assert "simulate:" not in text and "thresholds for" not in text
    assert "waiting until it has started" in text
    assert wait_until_done(tmp_path / "r", timeout_s=120) == "finished"


def test_ctrl_c_while_waiting_leaves_the_run_going(tiny_model: Path, tmp_path: Path) -> None:
    proc = detach(tiny_model, tmp_path)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line.rstrip())
        if "engine pid" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the terminal's foreground group
    rest = [line for _, line in lines_until_exit(proc)]
    assert proc.returncode == 0, seen + rest
    text = "\n".join(rest)
    assert "stopped waiting; the run goes on in the background" in text
    assert "bsnn cancel" in text and "interrupted" not in text
    deadline = time.monotonic() + 120  # the engine may not have written its first event yet
    while not (tmp_path / "r" / "events.jsonl").is_file():
        assert time.monotonic() < deadline, "the engine never started its run"
        time.sleep(0.1)
    assert wait_until_done(tmp_path / "r", timeout_s=300) == "finished"
    assert isinstance(read_events(tmp_path / "r")[0], Started)


def test_no_wait_needs_detach(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "--no-wait"]) == 2
    assert "--no-wait is for --detach" in capsys.readouterr().err


def test_threshold_calibration_reports_each_pass(
        batches_from: object, one_thread: None) -> None:
    torch.manual_seed(0)
    model = build_model("vgg6ab", 10, (1, 8, 8))
    images = torch.rand(40, 1, 8, 8)
    heard: list[tuple[int, int, int]] = []
    convert(model, batches_from(images, 16), 99.7,  # type: ignore[operator]
            progress=lambda *p: heard.append(p))
    assert [p for p, _, _ in heard] == list(range(1, len(heard) + 1)) and len(heard) >= 2
    assert {total for _, _, total in heard} == {5}  # vgg6ab: 5 ReLU layers
    done = [d for _, d, _ in heard]
    assert done == sorted(done) and done[-1] == 5


def test_a_run_emits_a_few_progress_events_not_one_per_image(tiny_model: Path,
                                                             tmp_path: Path) -> None:
    from bsnn.config import RunConfig
    from bsnn.pipeline.runner import run

    run(RunConfig(model=str(tiny_model), time=2, eval_size=16, batch_size=8, norm=64,
                  n_workers=0, device="cpu", job_dir=str(tmp_path), run_id="p"))
    events = read_events(tmp_path / "p")
    progress = [e for e in events if isinstance(e, Progress)]
    assert 2 <= len(progress) <= 6 and progress[-1].done == progress[-1].total == 5
    phases = [e.name for e in events if isinstance(e, Phase)]
    calibration = phases.index("threshold_calibration")
    first = events.index(progress[0])
    assert events.index(next(e for e in events if isinstance(e, Phase)
                             and e.name == "threshold_calibration")) < first
    assert phases[calibration + 1] == "simulate"
