"""`bsnn runs`: whole run ids at any terminal width, and a JSON list for scripts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_tui_support import fake_events, write_run

from bsnn.cli import main
from bsnn.cli.runs import columns_that_fit

IDS = ("20261202-074512-a1b2c3", "20261202-074513-d4e5f6")


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    for rid in IDS:
        write_run(tmp_path / rid, fake_events(tmp_path / rid))
    return tmp_path


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_run_ids_are_never_cut(job_dir: Path, columns: int, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(["runs", str(job_dir)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for rid in IDS:
        assert any(rid in line for line in lines), f"{rid} cut at {columns} columns:\n{out}"
    assert max(len(line) for line in lines) <= columns
    assert "finished" in out
    if columns == 200:  # room for everything, the model in full
        assert "bundled:digits-fp" in out and "96.88 %" in out


def test_narrow_terminals_drop_the_least_useful_columns_first() -> None:
    assert columns_that_fit(200, 22) == ["run", "status", "model", "arch", "dataset", "T", "p",
                                         "device", "images", "accuracy"]
    assert columns_that_fit(100, 22) == ["run", "status", "model", "dataset", "T", "images",
                                         "accuracy"]
    assert columns_that_fit(60, 22) == ["run", "status", "T", "accuracy"]
    assert columns_that_fit(30, 22) == ["run"]


def test_json_lists_every_run(job_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["runs", str(job_dir), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in runs] == list(IDS)
    assert {r["status"] for r in runs} == {"finished"}
    assert runs[0]["run_dir"] == str(job_dir / IDS[0])
    assert runs[0]["config"]["model"] == "bundled:digits-fp"
    assert runs[0]["images"] == 64 and runs[0]["final_accuracy"] == pytest.approx(0.96875)
