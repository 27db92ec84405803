"""A run folder is a lab notebook entry: every record says what actually ran.

The model, arch, data set, images, statistics, device, checkpoint hash and versions are
resolved once, where the model and data are loaded (a `resolved` event), and every record reads
that event: summary.json, summary.md, the CSVs, the plot's title, `bsnn runs` and the dashboard.
A run started each way (CLI, dashboard, detached, sweep, torchrun, the Python API) records the
same values.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from test_tui_support import fake_events, wait_for, write_run

import bsnn
from bsnn.cli import main
from bsnn.config import RunConfig
from bsnn.data import STATISTICS
from bsnn.detach import start_detached, wait_until_done
from bsnn.events import Event, Resolved, Started, describe, event_from_dict
from bsnn.exports import accuracy_figure, layers_csv, per_timestep_csv, summary_markdown
from bsnn.records import RECORD_COLUMNS, run_record, run_title
from bsnn.runlog import read_events
from bsnn.summary import summarize
from bsnn.sweep import parse_variant, sweep

REPO = Path(__file__).resolve().parent.parent
SMALL = {"time": 4, "eval_size": 16, "batch_size": 16, "norm": 32, "n_workers": 0,
         "device": "cpu"}
COMPARED = ("model", "checkpoint", "checkpoint_sha256", "arch", "width", "binary", "num_classes",
            "dataset", "data_path", "input_shape", "mean", "std", "device", "versions")


def expected(model: Path) -> dict[str, Any]:
    """What a run of the tiny digits checkpoint on the CPU resolves to."""
    mean, std = STATISTICS["digits"]
    return {"model": str(model), "checkpoint": str(model.absolute()),
            "checkpoint_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
            "arch": "vgg6ab", "width": 1.0, "binary": False, "num_classes": 10,
            "dataset": "digits", "data_path": "sklearn:load_digits", "input_shape": [1, 8, 8],
            "mean": list(mean), "std": list(std), "device": "cpu"}


def recorded(run_dir: Path) -> dict[str, Any]:
    """The resolved record as summary.json holds it, checked against the event log."""
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished", summary.get("error")
    events = read_events(run_dir)
    found = [e.to_dict() for e in events if isinstance(e, Resolved)]
    found += [e.resolved for e in events if isinstance(e, Started) and e.resolved]  # the API's
    assert len(found) == 1
    assert {k: found[0][k] for k in COMPARED} == {k: summary["resolved"][k] for k in COMPARED}
    return summary["resolved"]


def assert_resolved(run_dir: Path, model: Path) -> dict[str, Any]:
    record = recorded(run_dir)
    assert {k: record[k] for k in expected(model)} == expected(model)
    assert record["versions"]["bsnn"] == bsnn.__version__
    assert record["versions"]["torch"] == str(torch.__version__)
    return record


def config(model: Path, job_dir: Path, run_id: str | None, **changes: Any) -> RunConfig:
    """Nothing typed but the model: arch, data set and statistics come from the checkpoint."""
    return RunConfig(**{"model": str(model), "job_dir": str(job_dir), "run_id": run_id,
                        **SMALL, **changes})


# ---- every way of starting a run -------------------------------------------------------------

def test_cli_run_records_what_ran_beside_what_was_typed(tiny_model: Path, tmp_path: Path) -> None:
    argv = ["convert", "--model", str(tiny_model), "--job-dir", str(tmp_path), "--run-id", "cli",
            "--quiet", "--time", "4", "--eval_size", "16", "--batch-size", "16", "--norm", "32",
            "--n-workers", "0", "--device", "cpu"]
    assert main(argv) == 0
    record = assert_resolved(tmp_path / "cli", tiny_model)
    assert record["origin"] == {"arch": "from checkpoint", "width": "from checkpoint",
                                "dataset": "from checkpoint", "stats": "digits's own",
                                "data_path": "bundled; --data not used"}
    summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert summary["config"]["arch"] is None  # what was typed stays as typed, beside it


def test_dashboard_run_records_the_same(tiny_model: Path, tmp_path: Path) -> None:
    from bsnn_tui import producers
    from bsnn_tui.feed import RunFeed

    feed = RunFeed()
    producers.run_engine(config(tiny_model, tmp_path, "tui"), feed, threading.Event())
    record = assert_resolved(tmp_path / "tui", tiny_model)
    assert any(isinstance(e, Resolved) for e in feed.events())  # the panels get it too
    assert record["origin"]["dataset"] == "from checkpoint"


def test_detached_run_records_the_same(tiny_model: Path, tmp_path: Path) -> None:
    seen: list[Event] = []
    run_dir = start_detached(config(tiny_model, tmp_path, "detached"), on_event=seen.append)
    assert wait_until_done(run_dir, timeout_s=120) == "finished"
    assert_resolved(run_dir, tiny_model)
    assert [type(e).__name__ for e in seen][:1] == ["Started"]
    assert any(isinstance(e, Resolved) for e in seen)


def test_sweep_cells_record_the_same(tiny_model: Path, tmp_path: Path) -> None:
    rows, table = sweep(config(tiny_model, tmp_path, None), [str(tiny_model)], [99.7],
                        [parse_variant("one-step")])
    assert_resolved(tmp_path / rows[0]["run_id"], tiny_model)
    assert (rows[0]["arch"], rows[0]["dataset"]) == ("vgg6ab", "digits")
    assert "vgg6ab" in table.read_text()


def test_api_run_records_the_same(tiny_model: Path, tmp_path: Path) -> None:
    snn = bsnn.convert(str(tiny_model), "digits", norm=32, device="cpu")
    bsnn.simulate(snn, "digits", time=4, eval_size=16, device="cpu", job_dir=str(tmp_path),
                  run_id="api")
    assert_resolved(tmp_path / "api", tiny_model)


def test_torchrun_run_records_the_same(tiny_model: Path, tmp_path: Path) -> None:
    from test_distributed import CHILD_ENV, free_port

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "bsnn",
           "convert", "--model", str(tiny_model), "--time", "4", "--eval_size", "16",
           "--batch-size", "8", "--norm", "32", "--device", "cpu", "--job-dir", str(tmp_path),
           "--run-id", "torchrun", "--quiet"]
    env = {**os.environ, **CHILD_ENV, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert_resolved(tmp_path / "torchrun", tiny_model)


# ---- every record reads the one record ------------------------------------------------------

RESOLVED = {"type": "resolved", "time": 1_700_000_000.5, "model": "models/vgg-tiny.pt",
            "checkpoint": "/lab/models/vgg-tiny.pt", "checkpoint_sha256": "ab" * 32,
            "arch": "vgg6ab", "width": 0.5, "binary": True, "num_classes": 10,
            "dataset": "digits", "data_path": "sklearn:load_digits", "input_shape": [1, 8, 8],
            "mean": [0.3054], "std": [0.3761], "device": "cuda:0", "device_name": "NVIDIA H200",
            "versions": {"bsnn": "0.1.0", "torch": "2.5.0"},
            "origin": {"arch": "from checkpoint", "device": "--device auto"}}


def with_resolved(events: list[Event]) -> list[Event]:
    """A fake run's events with a fixed `resolved` record after its first phase."""
    event = event_from_dict(RESOLVED)
    assert event is not None
    return [*events[:2], event, *events[2:]]


@pytest.fixture
def summary(tmp_path: Path) -> dict[str, Any]:
    return summarize(with_resolved(fake_events(tmp_path / "r1", steps=16)))


def test_markdown_names_what_ran(summary: dict[str, Any]) -> None:
    text = summary_markdown(summary)
    assert text.splitlines()[0] == "# vgg-tiny.pt (vgg6ab x0.5 binary) on digits, T=16, p=99.7"
    assert f"sha256 `{'ab' * 32}`" in text and "`/lab/models/vgg-tiny.pt`" in text
    assert "- arch: vgg6ab x0.5 binary (from checkpoint), 10 classes" in text
    assert "read from `sklearn:load_digits`" in text and "images: 1x8x8" in text
    assert "mean [0.3054] and std [0.3761]" in text
    assert "- device: cuda:0 (NVIDIA H200) (--device auto)" in text
    assert "bsnn 0.1.0, torch 2.5.0" in text
    assert "None" not in text


def test_csv_exports_repeat_the_record_on_every_row(summary: dict[str, Any]) -> None:
    for text, rows in ((per_timestep_csv(summary), 16), (layers_csv(summary), 6)):
        header, *body = list(csv.reader(io.StringIO(text)))
        assert len(body) == rows and header[-len(RECORD_COLUMNS):] == list(RECORD_COLUMNS)
        cells = {row[header.index("arch")] for row in body}
        assert cells == {"vgg6ab"}
        first = dict(zip(header, body[0], strict=True))
        assert (first["dataset"], first["image_size"], first["device"], first["width"]) == \
            ("digits", "1x8x8", "cuda:0", "0.5")
        assert (first["checkpoint_sha256"], first["torch"], first["T"], first["percentile"]) == \
            ("ab" * 32, "2.5.0", "16", "99.7")
    assert per_timestep_csv(summary).splitlines()[1].startswith("1,")  # t, accuracy stay first


def test_plot_title_names_what_ran(summary: dict[str, Any], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from matplotlib.axes import Axes

    titles: list[str] = []
    original = Axes.set_title
    monkeypatch.setattr(Axes, "set_title",
                        lambda ax, label, *a, **k: titles.append(label) or original(ax, label))
    figure = accuracy_figure(summary)
    figure.savefig(tmp_path / "accuracy.png")
    assert titles == [run_title(summary)]
    assert titles[0] == "vgg-tiny.pt (vgg6ab x0.5 binary) on digits, T=16, p=99.7"
    assert (tmp_path / "accuracy.png").stat().st_size > 1000


def test_a_run_that_never_resolved_says_its_values_are_as_typed(tmp_path: Path) -> None:
    events = [e for e in fake_events(tmp_path / "r1") if isinstance(e, Started)]
    record = run_record(summarize(events))
    assert record["dataset"] == "digits" and record["arch"] is None
    assert "did not get to resolve" in record["origin"]["all"]
    assert "arch not recorded" in run_title(summarize(events))
    assert "as typed" in summary_markdown(summarize(events))


def test_resolved_reads_back_and_says_itself_in_words() -> None:
    event = event_from_dict(RESOLVED)
    assert isinstance(event, Resolved) and event.to_dict() == {**RESOLVED, "seq": None}
    words = describe(event)
    assert "vgg6ab x0.5 binary (from checkpoint) on digits" in words
    assert "device cuda:0 (--device auto)" in words and "sha256 abababababab" in words


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_bsnn_runs_shows_what_ran(tmp_path: Path, columns: int,
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    rid = "20261202-074512-a1b2c3"
    write_run(tmp_path / rid, with_resolved(fake_events(tmp_path / rid)))
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["runs", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert rid in out and max(len(line) for line in out.splitlines()) <= columns
    if columns == 200:
        assert "models/vgg-tiny.pt" in out and "vgg6ab x0.5 binary" in out
        assert "digits" in out and "cuda:0" in out
    assert main(["runs", str(tmp_path), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)
    assert listed["resolved"]["checkpoint_sha256"] == "ab" * 32


@pytest.mark.asyncio
async def test_dashboard_runs_screen_and_run_header_show_what_ran(tmp_path: Path) -> None:
    from bsnn_tui.app import BsnnApp
    from bsnn_tui.screens.run import RunScreen
    from bsnn_tui.screens.runs import RunsScreen

    rid = "20261202-074512-a1b2c3"
    write_run(tmp_path / rid, with_resolved(fake_events(tmp_path / rid)))
    app = BsnnApp(RunConfig(job_dir=str(tmp_path)))
    async with app.run_test(size=(200, 40)) as pilot:
        await pilot.press("r")
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        await wait_for(pilot, lambda: len(screen.entries) == 1, what="the run list")
        await pilot.pause()
        row = [str(cell) for cell in screen.query_one("#runs").get_row_at(0)]  # type: ignore
        for shown in ("vgg-tiny.pt", "vgg6ab x0.5 binary", "digits", "cuda:0"):
            assert shown in row, (shown, row)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen)
                       and app.screen.summary["status"] == "finished", what="the run")
        await pilot.pause(0.3)
        assert app.screen.title == "vgg-tiny.pt (vgg6ab x0.5 binary) on digits, T=16, p=99.7"
