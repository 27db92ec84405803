"""Snapshots of the dashboard at 80x24: the setup form and a finished run.

Deterministic by construction: the catalog and the model's metadata are fixed (no torch, no
bundled files, no CUDA), and the run is rebuilt from a fixed event log with fixed numbers, no
clocks and no paths on screen. Update with `pytest --snapshot-update` after a deliberate change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_records import with_resolved
from test_tui_support import fake_events, wait_for, write_run
from textual.pilot import Pilot
from textual.widgets import Input

from bsnn.config import RunConfig
from bsnn_tui import catalog
from bsnn_tui.app import BsnnApp
from bsnn_tui.screens.run import RunScreen

FIXED_CATALOG = catalog.Catalog(
    models=["bundled:digits-binary", "bundled:digits-fp", "models/cifar10-fp.pt"],
    archs=["vgg15ab", "vgg6ab", "vgg8ab"],
    devices=[("auto", "auto"), ("cpu", "cpu"), ("cuda:0 NVIDIA H200", "cuda:0")],
)
FIXED_META = {"arch": "vgg6ab", "dataset": "digits", "num_classes": 10, "binary": False,
              "ann_accuracy": 0.9778}


@pytest.fixture
def fixed_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "discover", lambda root: FIXED_CATALOG)
    monkeypatch.setattr(catalog, "describe_model", lambda model: FIXED_META)


async def _no_blink(pilot: Pilot[Any]) -> None:
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False


def test_setup_screen(snap_compare: Any, fixed_catalog: None) -> None:
    app = BsnnApp(RunConfig(time=64))

    async def settled(pilot: Pilot[Any]) -> None:
        def described() -> bool:
            info = app.setup.query("#model-info")
            return bool(info) and "vgg6ab" in str(info.first().render())

        await wait_for(pilot, described, what="the metadata")
        # the catalog says whether there is CUDA, and so what run mode `auto` means
        await wait_for(pilot, lambda: app.setup.cuda is not None, what="the catalog")
        await pilot.pause()
        await _no_blink(pilot)

    assert snap_compare(app, run_before=settled)


def test_finished_run(snap_compare: Any, tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "fixture-run", with_resolved(
        fake_events(tmp_path / "fixture-run", channelwise=True)))  # the header: what ran
    app = BsnnApp(RunConfig(job_dir=str(tmp_path)), attach=run_dir)

    async def settled(pilot: Pilot[Any]) -> None:
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen)
                       and app.screen.summary["status"] == "finished", what="the run")
        await pilot.pause(0.3)

    assert snap_compare(app, run_before=settled)
