"""The `bsnn` command line end to end, on a tiny untrained digits model (fast, no files)."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
import torch

from bsnn.cli import main
from bsnn.exports import EXPORT_FILES
from bsnn.jobdir import RESULTS_HEADER
from bsnn.runlog import read_events
from bsnn.snn.engine import Engine


def convert_args(model: Path, job_dir: Path, *extra: str) -> list[str]:
    return ["convert", "--model", str(model), "--dataset", "digits", "--time", "16",
            "--eval_size", "64", "--batch-size", "32", "--norm", "32", "--job-dir", str(job_dir),
            *extra]


def run_dirs(job_dir: Path) -> list[Path]:
    return sorted(p.parent for p in job_dir.glob("*/events.jsonl"))


def flat(text: str) -> str:
    """Rich wraps at the terminal width; compare text with the line breaks undone."""
    return " ".join(text.split())


def test_convert_writes_the_run_folder_and_the_results_line(
        tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = tmp_path / "job"
    assert main(convert_args(tiny_model, job)) == 0
    out = flat(capsys.readouterr().out)
    assert "accuracy per time step" in out
    (run_dir,) = run_dirs(job)
    for name in EXPORT_FILES:
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    acc = summary["accuracy_per_step"]
    for t in (1, 2, 4, 8, 16):  # the table's rows: step and its accuracy, at powers of two
        assert re.search(rf"(^| ){t} [│|] {100 * acc[t - 1]:.2f} %", out), (t, out)
    assert not re.search(r"(^| )32 [│|]", out)  # nothing beyond T
    assert f"{100 * acc[-1]:.2f} % at T=16" in out
    assert summary["status"] == "finished"
    assert summary["images"] == 64
    assert len(summary["accuracy_per_step"]) == 16
    assert read_events(run_dir)[-1].type == "finished"

    assert main(convert_args(tiny_model, job, "--quiet")) == 0
    lines = (job / "results" / "sim_result.txt").read_text().splitlines()
    assert lines[0] + "\n" == RESULTS_HEADER
    assert len(lines) == 3 and lines.count(lines[0]) == 1
    for line in lines[1:]:
        seed, steps, batch, seconds, accuracy = line.split(",")
        assert (seed, steps, batch) == ("0", "16", "32")
        assert float(seconds) > 0 and 0 <= float(accuracy) <= 100
    assert len(run_dirs(job)) == 2


def test_one_step_flag_selects_same_step_propagation(tiny_model: Path, tmp_path: Path) -> None:
    assert main(convert_args(tiny_model, tmp_path, "--one-step", "--propagation", "delayed",
                             "--time", "8", "--quiet")) == 0
    (run_dir,) = run_dirs(tmp_path)
    assert read_events(run_dir)[0].config["propagation"] == "same-step"


def test_gpu_flag_without_cuda_fails_cleanly(
        tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(convert_args(tiny_model, tmp_path, "--gpu")) == 2
    err = flat(capsys.readouterr().err)
    assert "no CUDA" in err and "--device cpu" in err
    assert "Traceback" not in err


def test_runs_lists_the_runs_with_their_status(
        tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(convert_args(tiny_model, tmp_path, "--quiet", "--run-id", "first")) == 0
    capsys.readouterr()
    assert main(["runs", str(tmp_path)]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert any(row[:1] == ["first"] and "finished" in row for row in rows), rows


def test_report_rebuilds_the_summary_files(
        tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(convert_args(tiny_model, tmp_path, "--quiet")) == 0
    (run_dir,) = run_dirs(tmp_path)
    before = json.loads((run_dir / "summary.json").read_text())
    for name in EXPORT_FILES:
        (run_dir / name).unlink()
    capsys.readouterr()
    assert main(["report", str(run_dir)]) == 0
    assert "finished" in capsys.readouterr().out
    for name in EXPORT_FILES:
        assert (run_dir / name).is_file(), name
    after = json.loads((run_dir / "summary.json").read_text())
    assert after["accuracy_per_step"] == before["accuracy_per_step"]


def _signal_on_first_batch(monkeypatch: pytest.MonkeyPatch, signum: int) -> None:
    """The engine sends itself `signum` in the middle of its first batch, as a Ctrl-C would."""
    original = Engine.run_batch

    def run_batch(self, x, labels, batch_index=0, **kwargs):  # type: ignore[no-untyped-def]
        if batch_index == 0:
            os.kill(os.getpid(), signum)
        return original(self, x, labels, batch_index, **kwargs)

    monkeypatch.setattr(Engine, "run_batch", run_batch)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 1)])
def test_ctrl_c_or_sigterm_cancels_at_a_batch_boundary(
        tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch, signum: int, code: int) -> None:
    handler = signal.getsignal(signum)
    _signal_on_first_batch(monkeypatch, signum)
    assert main(convert_args(tiny_model, tmp_path, "--batch-size", "16")) == code
    assert signal.getsignal(signum) == handler  # restored
    assert "Traceback" not in capsys.readouterr().err
    (run_dir,) = run_dirs(tmp_path)
    events = read_events(run_dir)
    assert events[-1].type == "cancelled"
    assert events[-1].images == 16  # the batch in flight was finished, the next not started
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "cancelled" and summary["images"] == 16
    assert not (tmp_path / "results" / "sim_result.txt").exists()


def test_cancel_refuses_a_run_that_is_not_running(
        tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(convert_args(tiny_model, tmp_path, "--quiet")) == 0
    (run_dir,) = run_dirs(tmp_path)
    capsys.readouterr()
    assert main(["cancel", str(run_dir)]) == 2
    assert "not running: it is finished" in flat(capsys.readouterr().err)
    assert main(["cancel", str(tmp_path / "no-such-run")]) == 2
    err = flat(capsys.readouterr().err)
    assert "no run folder" in err and "bsnn runs" in err


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "exit codes" in out and "2    bad input" in out and "130" in out
