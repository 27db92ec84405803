"""Every write is checked (issue 14): an export, the results line or an events.jsonl append that
fails (no space, no permission, an I/O error) makes the run fail with a message naming what is
missing and how to get it back, leaves no temp file, and keeps events.jsonl readable."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bsnn
import bsnn.jobdir
import bsnn.runfolder
import bsnn.runlog
from bsnn.cli import main
from bsnn.config import RunConfig
from bsnn.detach import start_detached, wait_until_done
from bsnn.errors import RunStorageError
from bsnn.events import Failed
from bsnn.exports import EXPORT_FILES
from bsnn.pipeline.runner import run
from bsnn.runlog import read_events
from bsnn.summary import summarize
from bsnn_tui.feed import RunFeed

ERRNOS = (errno.ENOSPC, errno.EACCES, errno.EIO)


def convert_args(model: Path, job_dir: Path) -> list[str]:
    return ["convert", "--model", str(model), "--dataset", "digits", "--time", "4",
            "--eval_size", "16", "--batch-size", "16", "--norm", "16", "--n-workers", "0",
            "--job-dir", str(job_dir), "--quiet"]


class _Broken:
    """A file whose writes fail with `code` (after `when(text)` is first true, then always)."""

    def __init__(self, file: Any, code: int, when: Any = lambda text: True) -> None:
        self._file, self.code, self.when, self.broken = file, code, when, False

    def write(self, data: Any) -> int:
        self.broken = self.broken or self.when(data)
        if self.broken:
            raise OSError(self.code, os.strerror(self.code))
        return int(self._file.write(data))

    def __enter__(self) -> _Broken:
        return self

    def __exit__(self, *exc: object) -> None:
        self._file.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def break_export(monkeypatch: pytest.MonkeyPatch, name: str, code: int) -> None:
    """Writing export `name` fails (its temp file is created first, as on a real disk)."""
    def opener(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = open(path, mode, *args, **kwargs)  # noqa: SIM115
        return _Broken(file, code) if Path(path).name.startswith(f".{name}.") else file

    monkeypatch.setattr(bsnn.runfolder, "open", opener, raising=False)


def break_appends(monkeypatch: pytest.MonkeyPatch, module: Any, code: int,
                  when: Any = lambda text: True) -> None:
    def opener(path: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        file = open(path, mode, *args, **kwargs)  # noqa: SIM115
        return _Broken(file, code, when) if "a" in mode else file

    monkeypatch.setattr(module, "open", opener, raising=False)


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if ".tmp" in p.name]


def cli_fails(capsys: pytest.CaptureFixture[str], argv: list[str], *words: str) -> str:
    """The CLI exits 2, ends with the error and its fix naming `words`, prints no summary."""
    code = main(argv)
    out, err = capsys.readouterr()
    flat = " ".join(err.split())
    assert code == 2, err
    assert "Traceback" not in err and "SNN accuracy" not in out
    assert 0 <= flat.rfind("error:") < flat.rfind("fix:"), err  # the last words: error, fix
    for word in words:
        assert word in flat, f"{word!r} not in {flat!r}"
    return flat


def the_run(job_dir: Path) -> Path:
    (run_dir,) = [p for p in job_dir.iterdir() if p.is_dir() and p.name != "results"]
    return run_dir


def assert_failed_run(job_dir: Path, *words: str) -> dict[str, Any]:
    """No temp file anywhere; the log readable and its status `failed`, naming `words`."""
    assert temp_files(job_dir) == []
    summary = summarize(read_events(the_run(job_dir)))
    assert summary["status"] == "failed"
    for word in words:
        assert word in summary["error"]["message"] + summary["error"]["fix"]
    return summary


@pytest.mark.parametrize(("name", "code"), [(name, ERRNOS[i % 3])
                                            for i, name in enumerate(EXPORT_FILES)]
                         + [("summary.json", errno.EACCES), ("accuracy.png", errno.EIO)])
def test_export_write_fails(name: str, code: int, tiny_model: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    break_export(monkeypatch, name, code)
    cli_fails(capsys, convert_args(tiny_model, tmp_path), name, os.strerror(code),
              "bsnn report")
    monkeypatch.undo()
    summary = assert_failed_run(tmp_path, name, "bsnn report")
    run_dir = the_run(tmp_path)
    assert not (run_dir / name).exists()
    written = [n for n in EXPORT_FILES if n != name]
    assert all((run_dir / n).is_file() for n in written)  # the others are all written ...
    if name != "summary.json":  # ... and say the run failed
        assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert summary["final_accuracy"] is not None  # what was simulated is kept
    assert main(["report", str(run_dir)]) == 0  # the fix the message gives works
    assert (run_dir / name).is_file()


def test_results_line_fails(tiny_model: Path, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str],
                            monkeypatch: pytest.MonkeyPatch) -> None:
    results = tmp_path / "results" / "sim_result.txt"
    results.parent.mkdir()
    results.write_text("seed,simulation time,batch size,inference time,accuracy\n0,4,16,1,50\n")
    break_appends(monkeypatch, bsnn.jobdir, errno.ENOSPC, when=lambda text: "\n" in text)
    cli_fails(capsys, convert_args(tiny_model, tmp_path), "results line", "sim_result.txt",
              "No space left", "add this line")
    monkeypatch.undo()
    assert_failed_run(tmp_path, "results line")
    assert results.read_text().endswith("0,4,16,1,50\n")  # the other runs' lines are whole
    assert json.loads((the_run(tmp_path) / "summary.json").read_text())["status"] == "failed"


def test_events_append_fails_mid_run(tiny_model: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    break_appends(monkeypatch, bsnn.runlog, errno.EIO, lambda text: "batch_done" in text)
    cli_fails(capsys, convert_args(tiny_model, tmp_path), "events.jsonl", "Input/output error")
    monkeypatch.undo()
    run_dir = the_run(tmp_path)
    assert temp_files(tmp_path) == []
    kinds = [e.type for e in read_events(run_dir)]  # what was logged stays readable
    assert kinds[0] == "started" and "thresholds" in kinds and "batch_done" not in kinds
    exported = json.loads((run_dir / "summary.json").read_text())  # the log is full: the
    assert exported["status"] == "failed"  # exports say it failed
    assert "events.jsonl" in exported["error"]["message"]


@pytest.mark.parametrize("code", ERRNOS)
def test_last_event_cannot_be_logged(code: int, tiny_model: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The exports are written before `finished`; when `finished` then cannot be logged they
    are rewritten to say the run failed."""
    break_appends(monkeypatch, bsnn.runlog, code, lambda text: '"type":"finished"' in text)
    cli_fails(capsys, convert_args(tiny_model, tmp_path), "events.jsonl", os.strerror(code))
    monkeypatch.undo()
    assert temp_files(tmp_path) == []
    assert "finished" not in [e.type for e in read_events(the_run(tmp_path))]
    exported = json.loads((the_run(tmp_path) / "summary.json").read_text())
    assert exported["status"] == "failed"


def test_api_export_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snn = bsnn.convert(bsnn.load_model("bundled:digits-fp"), "digits", norm=16, batch_size=16,
                       device="cpu")
    events: list[Any] = []
    break_export(monkeypatch, "layers.csv", errno.ENOSPC)
    with pytest.raises(RunStorageError) as info:
        bsnn.simulate(snn, "digits", time=4, eval_size=16, batch_size=16, device="cpu",
                      job_dir=str(tmp_path), on_event=events.append)
    monkeypatch.undo()
    assert "layers.csv" in info.value.message and "bsnn report" in info.value.fix
    assert isinstance(events[-1], Failed)  # the caller's stream ends with the failure
    assert_failed_run(tmp_path, "layers.csv")


def test_dashboard_feed_shows_the_failure(tiny_model: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The dashboard's run screen shows `feed.why_failed`: the missing files and the fix."""
    feed = RunFeed()
    config = RunConfig(model=str(tiny_model), dataset="digits", time=4, eval_size=16,
                       batch_size=16, norm=16, n_workers=0, job_dir=str(tmp_path))
    break_export(monkeypatch, "summary.md", errno.ENOSPC)
    with pytest.raises(RunStorageError) as info:
        run(config, emit=feed.append)
    feed.fail(info.value)
    problem = feed.why_failed(summarize(feed.events()))
    assert problem is not None
    assert "summary.md" in problem.message and "bsnn report" in problem.fix


@contextlib.contextmanager
def tiny_fs(where: Path, inodes: int) -> Iterator[Path]:
    """A real 200 KiB tmpfs whose inodes run out after the run folder and its log (`inodes`
    counts the root, results/, results/sim_result.txt, the run folder, events.jsonl and any
    more files the caller needs): every later new file, such as the exports' temp files,
    fails with ENOSPC, as on a full disk. Skips the test where mounting is not allowed."""
    mount = where / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size=200k,nr_inodes={inodes}",
                           "tmpfs", str(mount)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): "
                    f"{done.stderr.strip()}")
    try:
        (mount / "results").mkdir()
        (mount / "results" / "sim_result.txt").write_text(bsnn.jobdir.RESULTS_HEADER)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_real_tiny_file_system(tiny_model: Path, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    with tiny_fs(tmp_path, inodes=5) as job_dir:
        cli_fails(capsys, convert_args(tiny_model, job_dir), "summary.json", "accuracy.png",
                  "No space left", "bsnn report")
        assert_failed_run(job_dir, "summary.json", "bsnn report")
        assert not any(p.suffix in (".json", ".md", ".png") for p in the_run(job_dir).iterdir())


def test_detached_run_on_a_full_file_system(tiny_model: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A detached engine's failure shows in `bsnn runs` and in its engine.log."""
    with tiny_fs(tmp_path, inodes=6) as job_dir:  # + the engine's log
        config = RunConfig(model=str(tiny_model), dataset="digits", time=4, eval_size=16,
                           batch_size=16, norm=16, n_workers=0, job_dir=str(job_dir))
        run_dir = start_detached(config, wait_for=None)
        assert wait_until_done(run_dir, timeout_s=120) == "failed"
        assert_failed_run(job_dir, "summary.json", "bsnn report")
        assert "error: could not write" in (run_dir / "engine.log").read_text()
        capsys.readouterr()
        assert main(["runs", str(job_dir)]) == 0
        assert "failed" in capsys.readouterr().out
