"""The dashboard, driven by the keyboard through Textual's Pilot at 80x24.

End-to-end tests run the real engine on the bundled digits model; tests that need exact control
over timing or failures use the fake engine from test_tui_support.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from test_tui_support import FakeEngine, fake_events, wait_for, write_run
from textual.pilot import Pilot
from textual.widget import Widget
from textual.widgets import DataTable, Input, Label, Select, Static

from bsnn.config import RunConfig
from bsnn.detach import wait_until_done
from bsnn.errors import ConfigError
from bsnn.events import BatchDone, Event
from bsnn.exports import EXPORT_FILES
from bsnn.options import OPTION, OPTIONS
from bsnn.runfolder import RunFolder
from bsnn.runlog import EVENTS_FILE, read_events
from bsnn.summary import summarize
from bsnn_tui import producers
from bsnn_tui.app import BsnnApp, main
from bsnn_tui.feed import RunFeed
from bsnn_tui.options import build_parser, serve_command
from bsnn_tui.screens.run import PANELS_S, RunScreen
from bsnn_tui.screens.runs import FIRST_ROWS, ROWS_PER_CHUNK, RunsScreen
from bsnn_tui.screens.setup import SetupScreen
from bsnn_tui.widgets.accuracy import AccuracyPlot
from bsnn_tui.widgets.heatmap import RateHeatmap
from bsnn_tui.widgets.rates import FiringRateBars, FiringRates
from bsnn_tui.widgets.thresholds import ThresholdsTable


def _has_bundled_digits() -> bool:
    from bsnn.checkpoint import bundled_names

    return "bundled:digits-fp" in bundled_names()


needs_engine = pytest.mark.skipif(not _has_bundled_digits(),
                                  reason="bundled:digits-fp is not in bsnn/bundled yet")


def tiny(job_dir: Path, **overrides: object) -> RunConfig:
    """A digits run that takes a second or two on a laptop CPU."""
    values = {"model": "bundled:digits-fp", "eval_size": 64, "time": 16, "batch_size": 32,
              "norm": 64, "job_dir": str(job_dir)} | overrides
    return RunConfig(**values)  # type: ignore[arg-type]


def pace_batches(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Hold the engine `seconds` after each batch it reports. On digits it outruns the 0.25 s
    redraw (and a key press): paced, a test sees the panels between batches on any machine."""
    append = RunFeed.append

    def paced(feed: RunFeed, event: Event) -> None:
        append(feed, event)
        if isinstance(event, BatchDone):
            time.sleep(seconds)

    monkeypatch.setattr(RunFeed, "append", paced)


def run_screen(app: BsnnApp) -> RunScreen:
    assert isinstance(app.screen, RunScreen), f"on {type(app.screen).__name__}"
    return app.screen


def problem_text(app: BsnnApp) -> str:
    return str(app.screen.query_one("#problem", Static).render())


def finished(app: BsnnApp) -> bool:
    return app.live is not None and not app.live.active


# -- start-up -----------------------------------------------------------------------------------


def test_importing_the_app_loads_no_torch() -> None:
    """torch takes seconds to import: the first screen must paint without it."""
    code = "import sys, bsnn_tui.app; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[1])
    assert out.stdout.strip() == "False"


def test_flags_are_those_of_bsnn_convert() -> None:
    args = build_parser().parse_args([
        "--job-dir", "jobs", "--model", "m.pt", "--eval_size", "200", "--time", "32",
        "--batch-size", "50", "--percentile", "99.9", "--one-step", "--gpu", "--norm", "256",
        "--dataset", "cifar10", "--arch", "vgg8ab", "--seed", "3", "--n-workers", "0",
        "--results-file", "r.txt", "--data", "/d", "--threshold-granularity", "channel",
        "--reset", "zero", "--v0", "half", "--encoding", "poisson",
    ])
    c = RunConfig.from_args(args)
    assert (c.job_dir, c.model, c.eval_size, c.time, c.batch_size, c.percentile) == \
        ("jobs", "m.pt", 200, 32, 50, 99.9)
    assert (c.propagation, c.device, c.norm, c.dataset, c.arch, c.seed, c.n_workers) == \
        ("same-step", "cuda", 256, "cifar10", "vgg8ab", 3, 0)
    assert (c.results_file, c.data, c.threshold_granularity, c.reset, c.v0, c.encoding) == \
        ("r.txt", "/d", "channel", "zero", "half", "poisson")
    assert RunConfig.from_args(build_parser().parse_args([])) == RunConfig()  # one default each
    assert RunConfig().time == 80  # the original conversion.py's, the CLI's and the form's


@pytest.mark.asyncio
async def test_the_form_opens_with_the_defaults_of_the_flags(tmp_path: Path) -> None:
    """`bsnn-tui` without flags shows, in its widgets, the defaults `bsnn convert` uses: each
    field's text or selection is read off the screen and compared with the option table."""
    args = build_parser().parse_args([])
    app = BsnnApp(RunConfig.from_args(args))
    async with app.run_test() as pilot:
        await pilot.pause()
        shown = {o.name: app.setup.query_one(f"#{o.name}").value  # type: ignore[attr-defined]
                 for o in OPTIONS if o.form and o.name != "model"}
        model = app.setup.query_one("#model", Select).value
        path = app.setup.query_one("#model_path", Input).value
    assert (model, path) == (OPTION["model"].default, "")
    assert "job_dir" in shown and "percentile" in shown and "propagation" in shown
    for name, value in shown.items():
        default = OPTION[name].default
        # None ("the checkpoint's") shows as an empty field or the select's empty choice
        assert str(value) == ("" if default is None else str(default)), name
        assert getattr(args, name) in (default, None), name  # the flag's own default


def test_serve_runs_the_same_flags_without_the_serving_ones() -> None:
    command = serve_command(["--serve", "--host", "0.0.0.0", "--port=9000", "--time", "8"])
    assert command.endswith("-m bsnn_tui --time 8")


@pytest.mark.asyncio
async def test_the_form_shows_the_flags_and_reads_back_the_same_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tmp_path / "some" / "file.pt"  # the form refuses a model file that is not there
    model.parent.mkdir()
    model.write_bytes(b"")
    monkeypatch.setattr("bsnn_tui.catalog.describe_model", lambda path: {"arch": "vgg6ab"})
    given = tiny(tmp_path, model=str(model), percentile=99.0, dataset="cifar10",
                 device="cpu", propagation="delayed", threshold_granularity="channel")
    app = BsnnApp(given)
    async with app.run_test() as pilot:
        await pilot.pause()
        setup = app.setup
        assert setup.query_one("#model_path", Input).value == str(model)
        assert setup.query_one("#percentile", Input).value == "99.0"
        assert setup.query_one("#propagation", Select).value == "delayed"
        assert setup.config() == given


@pytest.mark.asyncio
async def test_normalize_is_on_the_form_and_an_original_binary_file_says_so(
        tmp_path: Path) -> None:
    from bsnn.models import build_model
    from bsnn.models.binary import binary_layers

    net = build_model("vgg6ab", 10, (1, 8, 8), binary=True)
    state = net.state_dict()  # saved as the authors saved binary nets: sign(W) * alpha
    for name, layer in net.named_modules():
        if layer in binary_layers(net):
            state[f"{name}.weight"] = layer.binary_weight()
    torch.save({"state_dict": state}, tmp_path / "orig.pth")
    app = BsnnApp(tiny(tmp_path, model=str(tmp_path / "orig.pth"), normalize="imagenet"))
    async with app.run_test() as pilot:
        await pilot.pause()
        field = app.setup.query_one("#normalize", Input)
        assert field.value == "imagenet" and field.placeholder == "from checkpoint"
        info = app.setup.query_one("#model-info", Static)
        await wait_for(pilot, lambda: "original layout" in str(info.render()), timeout=60,
                       what="the model panel")
        assert "binary weights (read from the weights)" in str(info.render())
        field.value = "0.5"
        await pilot.pause()
        assert "MEAN,STD" in problems(app)
        field.value = ""
        await pilot.pause()
        assert app.setup.config().normalize is None


# -- the form refuses what cannot run ------------------------------------------------------------


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """The fake engine in place of the real one; its `calls` counts the runs started."""
    fake = FakeEngine()
    monkeypatch.setattr(producers, "run_engine", fake)
    return fake


def problems(app: BsnnApp) -> str:
    """What the form's check box says."""
    return str(app.setup.query_one("#problems", Static).render())


@pytest.mark.asyncio
async def test_a_bad_percentile_is_explained_and_start_refused(tmp_path: Path,
                                                               engine: FakeEngine) -> None:
    app = BsnnApp(tiny(tmp_path))
    async with app.run_test() as pilot:
        percentile = app.setup.query_one("#percentile", Input)
        percentile.focus()
        percentile.value = ""
        await pilot.press(*"120")
        await pilot.pause()
        reasons = problems(app)
        assert "percentile 120.0 is outside (0, 100]" in reasons
        assert percentile.has_class("-invalid")
        await pilot.press("enter")  # Enter in a field starts: refused
        await pilot.press("ctrl+s")  # and so is the key
        await pilot.pause()
        assert engine.calls == 0 and isinstance(app.screen, SetupScreen)

        percentile.value = "abc"
        await pilot.pause()
        assert "'abc' is not a number" in problems(app)
        percentile.value = "99.5"
        await pilot.pause()
        assert "all values valid" in problems(app)


@pytest.mark.asyncio
async def test_each_field_is_checked_against_the_whole_form(tmp_path: Path,
                                                           engine: FakeEngine) -> None:
    """A readout delay of 70 is wrong at T 64 (as the flags gave them: shown at once) and right
    at T 128; changing T alone marks or clears the delay."""
    app = BsnnApp(tiny(tmp_path, time=64, readout_delay=70))
    async with app.run_test() as pilot:
        await pilot.pause()
        setup = app.setup
        delay, steps = setup.query_one("#readout_delay", Input), setup.query_one("#time", Input)
        assert "readout delay 70 is outside [0, T)" in problems(app)
        assert "between 0 and 63" in problems(app)
        assert delay.has_class("-invalid") and not steps.has_class("-invalid")
        with pytest.raises(ConfigError, match="readout delay"):
            setup.config()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert engine.calls == 0 and isinstance(app.screen, SetupScreen)

        steps.value = "128"
        await pilot.pause()
        assert not delay.has_class("-invalid") and "all values valid" in problems(app)
        assert setup.config().readout_delay == 70
        steps.value = "64"
        await pilot.pause()
        assert delay.has_class("-invalid") and "readout delay 70" in problems(app)


# -- runs with the fake engine: exact timing, exact failures ------------------------------------


@pytest.mark.asyncio
@needs_engine
async def test_cancel_stops_within_a_batch_and_keeps_the_partial_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real runner, paced: `c` (and `y`) stops it at the end of the batch in flight, and
    its own log ends `cancelled` with the partial curve."""
    pace_batches(monkeypatch, 0.3)
    app = BsnnApp(tiny(tmp_path, eval_size=-1, batch_size=16), start=True)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: run_screen(app).summary.images > 0, timeout=120,
                       what="a first batch")
        pressed_at = run_screen(app).summary.images
        await pilot.press("c", "y")  # a cancel asks first
        await wait_for(pilot, lambda: finished(app), timeout=60, what="the cancel")
    events = read_events(app.live.run_dir)  # type: ignore[union-attr]
    batches = [e for e in events if isinstance(e, BatchDone)]
    assert events[-1].type == "cancelled" and batches
    assert batches[-1].images <= pressed_at + 16  # at most the batch in flight
    assert batches[-1].images < batches[-1].images_total
    assert len(batches[-1].correct_per_step) == 16  # the partial curve is kept


@pytest.mark.asyncio
async def test_an_unexpected_error_is_shown_and_the_app_stays_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(config: RunConfig, feed: object, cancel: threading.Event) -> None:
        feed.append(fake_events(tmp_path / "broken")[0])  # type: ignore[attr-defined]
        (tmp_path / "broken").mkdir()
        raise ZeroDivisionError("division by zero in a plug-in")

    monkeypatch.setattr(producers, "run_engine", broken)
    app = BsnnApp(tiny(tmp_path), start=True)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: finished(app), what="the failure")
        await pilot.pause(0.4)
        assert "ZeroDivisionError: division by zero in a plug-in" in problem_text(app)
        assert "FAILED" in str(app.screen.query_one("#status", Static).render())
        assert "ZeroDivisionError" in (tmp_path / "broken" / "traceback.txt").read_text()
        monkeypatch.setattr(producers, "run_engine", FakeEngine())
        await pilot.press("ctrl+s")  # the next run works
        await wait_for(pilot, lambda: finished(app), what="the second run")
        await pilot.pause(0.4)
        assert run_screen(app).summary["status"] == "finished"


# -- the runs screen and following a log --------------------------------------------------------


def _truncated_run(run_dir: Path) -> Path:
    """A run killed mid-write after 4 of its 6 batches, its log torn inside a line."""
    write_run(run_dir, fake_events(run_dir, batches=6)[:-3])
    log = run_dir / EVENTS_FILE
    text = log.read_text()
    log.write_text(text + text.splitlines()[-1][:40])
    return run_dir


async def open_runs_screen(app: BsnnApp, pilot: Pilot, count: int) -> RunsScreen:
    """Press `r` and wait until the runs screen lists `count` runs."""
    await pilot.press("r")
    screen = app.screen
    assert isinstance(screen, RunsScreen)
    await wait_for(pilot, lambda: len(screen.entries) == count, what="the run list")
    return screen


@pytest.mark.asyncio
async def test_runs_screen_reads_finished_and_partial_runs(tmp_path: Path) -> None:
    write_run(tmp_path / "a-finished", fake_events(tmp_path / "a-finished"))
    _truncated_run(tmp_path / "b-partial")
    app = BsnnApp(RunConfig(job_dir=str(tmp_path)))
    async with app.run_test() as pilot:
        screen = await open_runs_screen(app, pilot, count=2)
        status = {e.run_dir.name: e.summary["status"] for e in screen.entries}
        assert status == {"a-finished": "finished", "b-partial": "interrupted"}

        await pilot.press("space", "down", "space")
        await pilot.pause()
        overlay = screen.query_one("#overlay", AccuracyPlot)
        assert sorted(label for label, _ in overlay.curves) == ["a-finished", "b-partial"]

        await pilot.press("up", "enter")  # newest first: the partial run is the top row
        await wait_for(pilot, lambda: isinstance(app.screen, RunScreen)
                       and app.screen.summary["images"] > 0, what="the partial run's panels")
        summary = run_screen(app).summary
        assert summary["status"] == "interrupted"
        assert (summary["images"], summary["images_total"]) == (64, 96)  # 4 of 6 batches
        assert run_screen(app).query_one(AccuracyPlot).curves[0][1] == \
            summary["accuracy_per_step"]


@pytest.mark.asyncio
async def test_a_large_job_dir_shows_its_newest_runs_first_and_then_every_run(
        tmp_path: Path) -> None:
    count = FIRST_ROWS + ROWS_PER_CHUNK + 7  # three chunks
    events = fake_events(tmp_path / "run-000", batches=1)
    for i in range(count):
        write_run(tmp_path / f"run-{i:03d}", events)
    app = BsnnApp(RunConfig(job_dir=str(tmp_path)))
    async with app.run_test() as pilot:
        screen = await open_runs_screen(app, pilot, count=count)
        table = screen.query_one(DataTable)
        await wait_for(pilot, lambda: table.row_count == count, what="every row")
        names = [str(table.get_row_at(i)[1]) for i in range(count)]
        assert names == [f"run-{i:03d}" for i in reversed(range(count))]

        await pilot.press(*["down"] * (FIRST_ROWS + 3))  # a row of the second chunk
        chosen = screen.current()
        assert chosen is not None and chosen.run_dir.name == names[FIRST_ROWS + 3]
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: app.screen is not screen, what="the help screen")
        write_run(tmp_path / "run-999", events)  # a newer run, listed when we come back
        await pilot.press("escape")
        await wait_for(pilot, lambda: table.row_count == count + 1, what="the new listing")
        now = screen.current()
        assert now is not None and now.run_dir == chosen.run_dir  # still on the run it was on


@pytest.mark.asyncio
async def test_attach_follows_a_run_written_by_another_process(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bsnn_tui.screens.run.PANELS_S", 0.1)  # a batch every 0.15 s is shown
    run_dir = tmp_path / "live"
    events = fake_events(run_dir, batches=5)
    write_run(run_dir, events[:3])

    def writer() -> None:
        with open(run_dir / EVENTS_FILE, "a", encoding="utf-8") as f:
            for event in events[3:]:
                time.sleep(0.15)
                f.write(json.dumps(event.to_dict()) + "\n")
                f.flush()

    app = BsnnApp(RunConfig(job_dir=str(tmp_path)), attach=run_dir)
    async with app.run_test() as pilot:
        thread = threading.Thread(target=writer)
        thread.start()
        seen: set[int] = set()

        def done() -> bool:
            seen.add(run_screen(app).summary["images"])
            return run_screen(app).summary["status"] == "finished"

        await wait_for(pilot, done, timeout=20, what="the followed run to finish")
        thread.join()
        assert len(seen - {0, 80}) >= 2  # it was watched batch by batch, not read at the end


@pytest.mark.asyncio
async def test_a_viewer_loads_the_form_only_when_it_is_shown(tmp_path: Path) -> None:
    """--attach opens on the run: the form under it reads no checkpoint (torch, ~400 MB) until
    the user goes to it."""
    run_dir = write_run(tmp_path / "done", fake_events(tmp_path / "done", batches=2))
    app = BsnnApp(RunConfig(job_dir=str(tmp_path)), attach=run_dir)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: run_screen(app).summary["status"] == "finished",
                       timeout=20, what="the attached run to be read")
        await pilot.pause(0.3)
        assert not app.setup.loaded and not app.setup.meta
        assert not [w for w in app.workers if w.group in ("catalog", "describe")]
        await pilot.press("n")
        await wait_for(pilot, lambda: app.setup.meta, timeout=60, what="the form's model")
        assert app.setup.loaded


# -- end to end with the real engine ------------------------------------------------------------


@pytest.mark.asyncio
@needs_engine
async def test_a_real_run_from_the_form_to_the_exports(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    pace_batches(monkeypatch, PANELS_S + 0.6)  # new figures wait up to PANELS_S + a tick
    app = BsnnApp(tiny(tmp_path))
    async with app.run_test() as pilot:
        await pilot.press("ctrl+s")
        screen = run_screen(app)
        seen: set[tuple[str, int]] = set()

        def done() -> bool:
            seen.add((screen.summary["status"], screen.summary["images"]))
            return finished(app) and screen.summary["status"] == "finished"

        await wait_for(pilot, done, timeout=120, what="the run to finish")
        await pilot.pause(0.4)
        assert ("running", 32) in seen  # the panels showed the first batch while it ran
        summary = screen.summary
        curve = screen.query_one(AccuracyPlot).curves[0][1]
        assert len(curve) == 16 and summary["images"] == 64

        await pilot.press("e")
        await wait_for(pilot, lambda: screen.exported, what="the export")
        run_dir = app.live.run_dir
        assert {p.name for p in screen.exported} == set(EXPORT_FILES)
        exported = json.loads((run_dir / "summary.json").read_text())
        assert exported["final_accuracy"] == curve[-1]
        assert exported["ann_accuracy"] == summary["ann_accuracy"]
        rows = list(csv.reader((run_dir / "per_timestep.csv").open()))
        assert len(rows) == 1 + 16 and float(rows[-1][1]) == pytest.approx(curve[-1], abs=1e-6)


@pytest.mark.asyncio
@needs_engine
async def test_a_bad_checkpoint_is_explained_and_the_next_run_works(tmp_path: Path) -> None:
    """A checkpoint the form reads (its metadata is fine) but whose weights do not fit its
    architecture: the engine fails, the run screen says why. (A missing file is refused on
    the form: test_tui_misfires.)"""
    from bsnn.checkpoint import read_checkpoint

    raw = read_checkpoint("bundled:digits-fp")
    state = dict(raw["state_dict"])
    state["features.0.weight"] = torch.zeros(3, 3)
    torch.save({**raw, "state_dict": state}, tmp_path / "misfit.pt")
    app = BsnnApp(tiny(tmp_path, model=str(tmp_path / "misfit.pt")))
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: app.setup.meta, timeout=60, what="the model's metadata")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: finished(app), timeout=60, what="the failure")
        await pilot.pause(0.4)
        assert "misfit.pt does not fit this architecture" in problem_text(app)
        assert run_screen(app).summary["status"] == "failed"

        await pilot.press("n")
        path = app.setup.query_one("#model_path", Input)
        path.value = ""  # back to the selected bundled model
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: finished(app) and isinstance(app.screen, RunScreen),
                       timeout=120, what="the second run")
        await pilot.pause(0.4)
        assert run_screen(app).summary["status"] == "finished"
        assert problem_text(app) == ""


async def cancel_after_first_batch(app: BsnnApp, pilot: Pilot, within_s: float = 60) -> None:
    """Press `c` and `y` once a batch is done; the run ends cancelled (within `within_s`) with a
    partial count."""
    await wait_for(pilot, lambda: run_screen(app).summary["images"] > 0, timeout=120,
                   what="a first batch")
    await pilot.press("c", "y")  # a cancel asks first
    await wait_for(pilot, lambda: finished(app), timeout=within_s, what="the cancel")
    await pilot.pause(0.4)
    summary = run_screen(app).summary
    assert summary["status"] == "cancelled"
    assert 0 < summary["images"] < summary["images_total"]


@pytest.mark.asyncio
@needs_engine
async def test_cancelling_a_real_run_keeps_what_was_done(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    pace_batches(monkeypatch, 0.1)
    app = BsnnApp(tiny(tmp_path, eval_size=-1, batch_size=8, time=64), start=True)
    async with app.run_test() as pilot:
        await cancel_after_first_batch(app, pilot)
        assert (app.live.run_dir / "summary.json").is_file()  # the engine exports what it has


# -- run modes: a detached engine, viewers of it, cancel from a viewer ---------------------------


def long_run(job_dir: Path) -> RunConfig:
    """All 360 digits in 45 batches of 0.8 s each (T=2048, 2-core AMD EPYC): a cancel lands
    mid-run. At T=64 the whole run took 1.4 s, ending before a viewer could cancel it."""
    return tiny(job_dir, eval_size=-1, batch_size=8, time=2048)


@pytest.fixture
def detached_job_dir(tmp_path: Path) -> Iterator[Path]:
    """A job dir whose detached engines are cancelled when the test ends, even if it failed."""
    yield tmp_path
    for events in tmp_path.glob(f"*/{EVENTS_FILE}"):
        if RunFolder.open(events.parent).status() == "running":
            RunFolder(events.parent).request_cancel()


def test_run_mode_auto_is_detached_on_cuda_only() -> None:
    resolve = producers.resolve_run_mode
    assert [resolve("auto", d) for d in ("cpu", "cuda", "cuda:1")] == \
        ["in-process", "detached", "detached"]
    assert (resolve("auto", "auto", cuda=True), resolve("auto", "auto", cuda=False)) == \
        ("detached", "in-process")
    assert (resolve("detached", "cpu"), resolve("in-process", "cuda:0")) == \
        ("detached", "in-process")
    assert build_parser().parse_args([]).run_mode == "auto"
    assert build_parser().parse_args(["--run-mode", "detached"]).run_mode == "detached"


def test_quitting_a_detached_run_says_how_to_attach_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real app and main(): start a detached run, press q while it runs; the run is not
    cancelled and main() prints how to follow it again. Only the detached engine is a stand-in
    (it runs until its follower stops, as the real one's log would)."""
    run_dir = tmp_path / "some-run"
    cancelled: list[bool] = []

    def engine(config: RunConfig, feed: RunFeed, cancel: threading.Event, stop: object) -> None:
        feed.detached, feed.run_dir = True, run_dir
        while not stop():  # type: ignore[operator]
            time.sleep(0.02)
        cancelled.append(cancel.is_set())

    async def quit_while_running(pilot: Pilot) -> None:
        await wait_for(pilot, lambda: pilot.app.running, what="the run")
        await pilot.press("q")

    monkeypatch.setattr(producers, "run_detached", engine)
    headless = BsnnApp.run
    monkeypatch.setattr(BsnnApp, "run",
                        lambda app: headless(app, headless=True, auto_pilot=quit_while_running))
    assert main(["--run-mode", "detached", "--start", "--job-dir", str(tmp_path)]) == 0
    assert f"bsnn-tui --attach {run_dir}" in capsys.readouterr().out
    assert cancelled == [False]  # quitting left the detached run going


@pytest.mark.asyncio
@pytest.mark.skipif(torch.cuda.is_available(), reason="auto means detached where there is CUDA")
async def test_run_mode_auto_runs_in_process_on_a_cpu_only_machine(
        tmp_path: Path, engine: FakeEngine) -> None:
    app = BsnnApp(tiny(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        run_mode = app.setup.query_one("#run_mode", Select)
        assert run_mode.value == "auto" and run_mode.region.bottom <= 24 - 1 - 6  # fits 80x24
        await wait_for(pilot, lambda: app.setup.cuda is not None, what="the catalog")
        assert "auto → in-process" in str(run_mode.query_one("#label", Static).render())
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: finished(app), what="the run")
        assert engine.calls == 1 and not app.live.detached


@pytest.mark.asyncio
@needs_engine
async def test_a_detached_run_from_the_form_fills_the_panels_of_two_viewers(
        detached_job_dir: Path) -> None:
    app = BsnnApp(tiny(detached_job_dir, time=8), run_mode="detached")
    async with app.run_test() as pilot:
        assert app.setup.run_mode() == "detached"  # --run-mode prefills the form
        await pilot.press("ctrl+s")
        screen = run_screen(app)
        await wait_for(pilot, lambda: screen.summary["status"] == "running", timeout=60,
                       what="the engine to start")
        run_dir = app.live.run_dir
        assert app.live.detached and "detached" in screen.sub_title
        assert read_events(run_dir)[0].pid != os.getpid()  # a process of its own
        viewer = BsnnApp(RunConfig(job_dir=str(detached_job_dir)), attach=run_dir)
        async with viewer.run_test() as second:
            seen: set[str] = set()  # what the second viewer showed along the way

            def both_done() -> bool:
                if isinstance(viewer.screen, RunScreen):
                    seen.add(viewer.screen.summary["status"])
                return finished(app) and screen.summary["status"] == "finished" \
                    and "finished" in seen

            await wait_for(second, both_done, timeout=120, what="the run, in both viewers")
            await pilot.pause(0.4)
            assert "running" in seen  # the second viewer followed it live
            on_disk = summarize(read_events(run_dir))
            for summary in (screen.summary, run_screen(viewer).summary):
                assert (summary["images"], summary["time_steps"]) == (64, 8)
                assert summary["accuracy_per_step"] == on_disk["accuracy_per_step"]
            assert screen.query_one(AccuracyPlot).curves[0][1] == on_disk["accuracy_per_step"]
        assert wait_until_done(run_dir, timeout_s=30) == "finished"


@pytest.mark.asyncio
@needs_engine
async def test_cancelling_a_detached_run_from_its_viewer(detached_job_dir: Path) -> None:
    app = BsnnApp(long_run(detached_job_dir), run_mode="detached", start=True)
    async with app.run_test() as pilot:
        await cancel_after_first_batch(app, pilot)
        run_dir = app.live.run_dir
    assert wait_until_done(run_dir, timeout_s=30) == "cancelled"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "cancelled"


@pytest.mark.asyncio
@needs_engine
async def test_quitting_leaves_a_detached_run_going_and_the_runs_screen_reattaches(
        detached_job_dir: Path) -> None:
    app = BsnnApp(long_run(detached_job_dir), run_mode="detached", start=True)
    async with app.run_test() as pilot:
        await wait_for(pilot, lambda: run_screen(app).summary["status"] == "running",
                       timeout=60, what="the engine to start")
        run_dir = app.live.run_dir
        await pilot.press("q")
    assert app.left_running == run_dir
    assert RunFolder.open(run_dir).status() == "running"  # the engine did not stop

    viewer = BsnnApp(RunConfig(job_dir=str(detached_job_dir)))
    async with viewer.run_test() as pilot:
        runs = await open_runs_screen(viewer, pilot, count=1)
        assert runs.entries[0].summary["status"] == "running"
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(viewer.screen, RunScreen)
                       and viewer.screen.summary["images"] > 0, timeout=120,
                       what="the live run's panels")
        screen = run_screen(viewer)
        first = screen.summary["images"]
        await wait_for(pilot, lambda: screen.summary["images"] > first, timeout=60,
                       what="a batch more: the viewer follows the run")
        assert "attached" in screen.sub_title
        await pilot.press("c", "y")
        await wait_for(pilot, lambda: screen.summary["status"] == "cancelled", timeout=60,
                       what="the cancel")
        assert screen.summary["images"] < screen.summary["images_total"]
    assert wait_until_done(run_dir, timeout_s=30) == "cancelled"
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "cancelled"


# -- watching is cheap --------------------------------------------------------------------------


def test_the_feed_keeps_the_last_batch_only_and_counts_every_event(tmp_path: Path) -> None:
    events = fake_events(tmp_path / "run", batches=6)
    feed = RunFeed()
    for event in events:
        feed.append(event)
    assert len(feed) == len(events)  # a screen sees every batch arrive
    assert len(feed.events()) == len(events) - 5  # but six batches are kept as one
    assert summarize(feed.events()) == summarize(events)


@pytest.mark.asyncio
async def test_a_redraw_with_nothing_new_repaints_no_panel(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    feed = RunFeed()
    for event in fake_events(tmp_path / "run"):
        feed.append(event)
    app = BsnnApp(RunConfig(job_dir=str(tmp_path)))
    async with app.run_test() as pilot:
        screen = RunScreen(feed)
        await app.push_screen(screen)
        await pilot.pause(0.5)
        panels = (AccuracyPlot, ThresholdsTable, FiringRates, FiringRateBars, RateHeatmap,
                  Label)
        refreshed: list[str] = []
        refresh = Widget.refresh

        def counted(self: Widget, *args: Any, **kwargs: Any) -> Widget:
            if isinstance(self, panels):
                refreshed.append(type(self).__name__)
            return refresh(self, *args, **kwargs)

        monkeypatch.setattr(Widget, "refresh", counted)
        screen._state = None  # as the periodic re-check does: summarize and show again
        screen.redraw()
        assert refreshed == []


@pytest.mark.asyncio
async def test_new_batches_are_drawn_at_most_once_per_panel_interval(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events = fake_events(tmp_path / "run", batches=5)
    first = next(i for i, e in enumerate(events) if isinstance(e, BatchDone))
    feed = RunFeed()
    feed.active = True
    for event in events[:first + 1]:
        feed.append(event)
    interval = "bsnn_tui.screens.run.PANELS_S"
    monkeypatch.setattr(interval, 60.0)  # no test machine is that slow between two lines
    app = BsnnApp(RunConfig(job_dir=str(tmp_path)))
    async with app.run_test() as pilot:
        screen = RunScreen(feed)
        await app.push_screen(screen)
        await pilot.pause()
        assert screen.summary["images"] == 16  # the first figures at once
        for event in events[first + 1:first + 4]:  # three batches within the interval
            feed.append(event)
            screen.redraw()
        assert screen.summary["images"] == 16
        monkeypatch.setattr(interval, 0.2)
        await pilot.pause(0.6)
        assert screen.summary["images"] == 64  # then the latest only
        plot = screen.query_one(AccuracyPlot)
        assert plot.curves[0][1] == screen.summary["accuracy_per_step"]
        builds = plot.builds
        plot.border_subtitle = "repainted"
        await pilot.pause()
        assert plot.builds == builds  # a repaint reuses the figure

        monkeypatch.setattr(interval, 60.0)
        feed.append(events[first + 4])
        feed.fail(RuntimeError("the disk is full"))  # a failure is shown at once
        screen.redraw()
        assert screen.summary["images"] == 80
        assert "the disk is full" in problem_text(app)


def plain(row: list[tuple[str, str]]) -> str:
    return "".join(text for text, _ in row)


def test_the_plot_puts_each_step_and_the_references_where_they_belong() -> None:
    from bsnn_tui.widgets.accuracy import plot_lines

    curve = [0.0, 0.25, 0.5, 0.75, 1.0]  # t = 1..5, a straight line from 0 to 100 %
    lines = [plain(row) for row in plot_lines([("SNN", curve)], 5, ann=0.5, within=3,
                                              size=(24, 11))]
    assert len(lines) == 11  # 8 rows of dots, the axis, its numbers, its name
    assert [line[:4] for line in lines[:8]] == \
        ["100┤", "   │", " 75┤", "   │", " 50┤", " 25┤", "   │", "  0┤"]
    dots = [line[4:] for line in lines[:8]]  # 20 cells: 40 x 32 dots
    assert dots[0][-1] != " " and dots[-1][0] != " "  # from the bottom left to the top right
    assert dots[0][0] == " " and dots[-1][-1] == " "
    column = 20 * 2 // 4  # t=3 of 5: half way across, cell 9 or 10
    assert all(row[column - 1:column + 1].strip() for row in dots)  # the green line, top to bottom
    half = sum(1 for c in dots[4] if c != " ")  # the ANN's 50 %: a grey line across
    assert half == 20
    assert lines[8].startswith("   └┬") and lines[8].count("┬") == 5
    assert lines[9].split() == ["1", "2", "3", "4", "5"] and "time step t" in lines[10]


def test_the_plot_overlays_runs_with_a_legend_and_says_when_it_has_no_room() -> None:
    from bsnn_tui.widgets.accuracy import plot_lines

    lines = [plain(row) for row in plot_lines([("run-a", [0.5] * 8), ("run-b", [0.9] * 8)],
                                              8, ann=None, within=None, size=(40, 7))]
    # the legend in the corner it hides least of: the bottom right, under both curves
    assert lines[3].endswith("■ run-a") and lines[4].endswith("■ run-b")
    assert len(lines) == 7  # no room for the axis's name
    assert plain(plot_lines([], 0, None, None, size=(6, 3))[0]).startswith("enlarge")


def test_a_braille_line_has_both_ends_and_drops_what_is_off_the_canvas() -> None:
    from bsnn_tui.widgets.braille import Canvas

    canvas = Canvas(2, 1)  # 4 x 4 dots
    canvas.line((0, 3), (3, 0), "cyan")
    canvas.dot(9, 9, "red")
    assert canvas.row(0) == [("⡠⠊", "cyan")]  # dots (0,3) (1,2) | (2,1) (3,0)


def test_the_time_axis_is_labelled_in_whole_steps() -> None:
    from bsnn_tui.widgets.accuracy import step_ticks

    assert step_ticks(8) == [1, 2, 4, 6, 8]
    assert step_ticks(80) == [1, 32, 64, 80]  # the default T: its end is shown
    assert step_ticks(256) == [1, 64, 128, 192, 256]
    assert step_ticks(2) == [1, 2]
    for last in range(2, 1100):
        ticks = step_ticks(last)
        assert ticks[0] == 1 and ticks[-1] <= last and len(ticks) <= 6, last
        assert ticks == sorted(set(ticks)), last
