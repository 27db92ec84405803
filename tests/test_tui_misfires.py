"""Issue 26, the dashboard's misfires and misleading screens: keys that change a run are hard to
press by mistake, the focused field shows in 256 colours, a missing model is refused on the
form, the panels keep their layout at 80x24, open lists do not read as other fields' values,
the help says what the keys do, and the overlay shows only runs with a curve.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest
from rich.color import Color as RichColor
from rich.color import ColorSystem
from rich.text import Text
from test_tui import finished, problems, run_screen, tiny
from test_tui_support import FakeEngine, fake_events, wait_for, write_run
from textual.color import Color
from textual.widget import Widget
from textual.widgets import Input, Label, Select
from textual.widgets._select import SelectCurrent, SelectOverlay

from bsnn.config import RunConfig
from bsnn.events import BatchDone, Failed
from bsnn.exports import EXPORT_FILES
from bsnn_tui import catalog, producers
from bsnn_tui.app import BsnnApp
from bsnn_tui.feed import RunFeed
from bsnn_tui.screens.confirm import ConfirmScreen
from bsnn_tui.screens.help import KEYS, PANELS
from bsnn_tui.screens.run import RunScreen
from bsnn_tui.screens.runs import RunsScreen
from bsnn_tui.screens.setup import SetupScreen
from bsnn_tui.widgets.accuracy import AccuracyPlot, plot_lines
from bsnn_tui.widgets.heatmap import RateHeatmap
from bsnn_tui.widgets.rates import FiringRateBars, FiringRates
from bsnn_tui.widgets.runs_table import SHORTEST, RunsTable, fit_columns
from bsnn_tui.widgets.thresholds import ThresholdsTable


def notes(app: BsnnApp) -> str:
    return "\n".join(str(n.message) for n in app._notifications)


def screen_text(app: BsnnApp) -> list[str]:
    """What the terminal shows, line by line."""
    return [strip.text for strip in app.screen._compositor.render_strips()]


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """The fake engine in place of the real one; its `calls` counts the runs started."""
    fake = FakeEngine()
    monkeypatch.setattr(producers, "run_engine", fake)
    return fake


@pytest.fixture
def slow_engine(monkeypatch: pytest.MonkeyPatch) -> FakeEngine:
    """An in-process engine that takes 0.3 s a batch, long enough to answer a question."""
    fake = FakeEngine(delay_s=0.3, batches=30)
    monkeypatch.setattr(producers, "run_engine", fake)
    return fake


async def start_in_process(app: BsnnApp, pilot: Any) -> None:
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: isinstance(app.screen, RunScreen)
                   and run_screen(app).summary.images > 0, what="a first batch")


# -- 1. keys that change a run ------------------------------------------------------------------


@pytest.mark.asyncio
async def test_letters_on_the_form_start_and_cancel_nothing_ctrl_s_starts(
        tmp_path: Path, engine: FakeEngine) -> None:
    app = BsnnApp(tiny(tmp_path))
    async with app.run_test() as pilot:
        await pilot.pause()
        await pilot.press("tab", "tab", "tab")  # tabbing through the form
        app.setup.query_one("#dataset", Select).focus()  # a field that is not text
        await pilot.press("s", "c", "escape", "s")  # neither on a field nor on Start
        await pilot.pause(0.3)
        assert engine.calls == 0 and isinstance(app.screen, SetupScreen)
        assert not list(tmp_path.iterdir())  # no run folder either
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: finished(app), what="the run")
        assert engine.calls == 1


@pytest.mark.asyncio
async def test_cancel_asks_first_and_the_safe_answer_is_the_default(
        tmp_path: Path, slow_engine: FakeEngine) -> None:
    app = BsnnApp(tiny(tmp_path), run_mode="in-process")
    async with app.run_test() as pilot:
        await start_in_process(app, pilot)
        await pilot.press("c", "r", "question_mark", "c")  # other keys wait for the answer
        assert isinstance(app.screen, ConfirmScreen) and len(app.screen_stack) == 3
        await pilot.press("n")  # keep it
        await pilot.press("c", "enter")  # a stray Enter keeps it too
        await pilot.pause(0.5)
        assert app.running and not app._cancel.is_set()
        assert isinstance(app.screen, RunScreen)
        await pilot.press("c", "y")
        await wait_for(pilot, lambda: finished(app), what="the cancel")
        await pilot.pause(0.4)
        assert run_screen(app).summary.status == "cancelled"


@pytest.mark.asyncio
async def test_quitting_an_in_process_run_asks_and_a_yes_stops_it(
        tmp_path: Path, slow_engine: FakeEngine) -> None:
    app = BsnnApp(tiny(tmp_path), run_mode="in-process")
    async with app.run_test() as pilot:
        await start_in_process(app, pilot)
        for key in ("q", "ctrl+q"):
            await pilot.press(key)
            assert isinstance(app.screen, ConfirmScreen)
            assert "stops" in str(app.screen.query_one("#question").render())
            await pilot.press("escape")  # keep watching
            assert isinstance(app.screen, RunScreen) and app.return_code is None
        assert app.running and not app._cancel.is_set()
        await pilot.press("q", "y")
        await pilot.pause()
        assert app._cancel.is_set() and app.return_code == 0


# -- 2. the focused field -----------------------------------------------------------------------


def in_256_colours(color: Color) -> tuple[int, int, int]:
    """The colour a 256-colour terminal shows for `color`."""
    reduced = RichColor.from_rgb(*color.rgb).downgrade(ColorSystem.EIGHT_BIT)
    return tuple(reduced.get_truecolor())  # type: ignore[return-value]


def background(widget: Widget) -> tuple[int, int, int]:
    return in_256_colours(widget.background_colors[1])


@pytest.mark.asyncio
async def test_the_focused_field_stands_out_in_256_colours(tmp_path: Path) -> None:
    app = BsnnApp(tiny(tmp_path))
    async with app.run_test() as pilot:
        setup = app.setup
        for focused, other in (("#time", "#eval_size"), ("#device", "#dataset")):
            setup.query_one(focused).focus()
            await pilot.pause()
            shown = [setup.query_one(selector) for selector in (focused, other)]
            shown = [w.query_one(SelectCurrent) if isinstance(w, Select) else w for w in shown]
            on, off = map(background, shown)
            assert math.dist(on, off) > 100, (focused, on, off)  # a 5 % tint: 17 apart


# -- 3. a missing model -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_missing_model_is_named_on_the_form_and_start_refused(
        tmp_path: Path, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "describe_model", lambda model: {"arch": "vgg6ab"})
    jobs = tmp_path / "jobs"
    missing = tmp_path / "nosuch.pt"
    app = BsnnApp(tiny(jobs, model=str(missing)))
    async with app.run_test() as pilot:
        await pilot.pause()
        assert f"model file {missing} not found" in problems(app)
        assert "all values valid" not in problems(app)
        await pilot.press("ctrl+s")
        await pilot.pause(0.3)
        assert engine.calls == 0 and isinstance(app.screen, SetupScreen)
        assert not jobs.exists()  # no run folder was made
        assert "not found" in notes(app) and "clear the path" in notes(app)

        missing.write_bytes(b"")  # the file is there now: typing the path again checks it
        path = app.setup.query_one("#model_path", Input)
        path.value = ""
        path.value = str(missing)
        await wait_for(pilot, lambda: "all values valid" in problems(app), what="the check")


# -- 4. the panels at 80x24 and the runs table --------------------------------------------------


@pytest.mark.asyncio
async def test_at_80x24_every_rate_fits_and_nothing_moves_at_the_first_batch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("bsnn_tui.screens.run.PANELS_S", 0.0)
    events = fake_events(tmp_path / "run", channelwise=True)
    first = next(i for i, e in enumerate(events) if isinstance(e, BatchDone))
    feed = RunFeed()
    for event in events[:first]:
        feed.append(event)
    app = BsnnApp(RunConfig(job_dir=str(tmp_path)))
    async with app.run_test(size=(80, 24)) as pilot:
        screen = RunScreen(feed)
        await app.push_screen(screen)
        await pilot.pause(0.3)
        parts = (AccuracyPlot, ThresholdsTable, FiringRates, "#layers")

        def sizes() -> list[tuple[int, int]]:
            return [tuple(screen.query_one(part).size) for part in parts]  # type: ignore

        before = sizes()
        for event in events[first:first + 1]:
            feed.append(event)
        await pilot.pause(0.5)
        assert screen.summary.images == 16
        assert sizes() == before  # no column jumps, the plot keeps its rows
        assert screen.query_one(AccuracyPlot).size.height >= 10
        layers = screen.query_one("#layers")
        assert layers.virtual_size.width <= layers.scrollable_content_region.width  # all fits
        assert layers.max_scroll_y > 0  # and the layers that do not fit in height scroll
        for left_out in (RateHeatmap, FiringRateBars):  # pictures, not figures
            assert screen.query_one(left_out).styles.display == "none"
        text = "\n".join(screen_text(app))
        assert "0.048 0.150" in text  # conv1_1's SNN and ANN rates, side by side


@pytest.mark.asyncio
async def test_a_wide_screen_shows_the_heatmap_and_the_bars(tmp_path: Path) -> None:
    run_dir = write_run(tmp_path / "done", fake_events(tmp_path / "done"))
    app = BsnnApp(RunConfig(job_dir=str(tmp_path)), attach=run_dir)
    async with app.run_test(size=(130, 36)) as pilot:
        await wait_for(pilot, lambda: run_screen(app).summary.status == "finished",
                       what="the run")
        await pilot.pause(0.3)
        screen = run_screen(app)
        assert screen.query_one(FiringRateBars).styles.display == "block"
        assert screen.query_one(RateHeatmap).region.width >= 12


def failed_run(run_dir: Path, model: str) -> Path:
    """A run that failed before its first batch: a start and a failure, no curve."""
    started = fake_events(run_dir)[0]
    config = {**started.config, "model": model, "dataset": None}  # type: ignore[attr-defined]
    return write_run(run_dir, [dataclasses.replace(started, config=config),  # type: ignore
                               Failed(time=started.time + 1, error="CheckpointError",
                                      message=f"model file {model} not found", images=0)])


def job_dir_of_three(root: Path) -> Path:
    for name in ("20261129-101500-ab12", "20261129-101700-cd34"):
        write_run(root / name, fake_events(root / name, steps=16))
    failed_run(root / "20261129-102000-ef56", "nosuch.pt")
    return root


@pytest.mark.asyncio
@pytest.mark.parametrize("size", [(120, 30), (80, 24)])
async def test_the_runs_table_shows_whole_values_or_leaves_them_out(
        tmp_path: Path, size: tuple[int, int]) -> None:
    app = BsnnApp(RunConfig(job_dir=str(job_dir_of_three(tmp_path))))
    async with app.run_test(size=size) as pilot:
        await pilot.press("r")
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        await wait_for(pilot, lambda: len(screen.entries) == 3, what="the runs")
        await pilot.pause(0.3)
        table = screen.query_one(RunsTable)
        shown = {column.key: width for column, width in table.plan}
        assert {"run", "status", "acc", "ann", "T", "p", "images"} <= set(shown)  # the figures
        assert table.virtual_size.width <= table.size.width  # nothing runs past the edge
        text = "\n".join(screen_text(app))
        if size[0] >= 120:
            for value in ("nosuch.pt", "bundled:digits-fp", "digits", "20261129-102000-ef56"):
                assert value in text, value
        for key in ("model", "dataset", "arch", "device"):
            assert shown.get(key, SHORTEST) >= SHORTEST, key  # no stub such as `bund`


def test_text_columns_are_shortened_with_room_or_left_out() -> None:
    needed = {"mark": 1, "run": 20, "status": 8, "acc": 6, "ann": 6, "T": 2, "p": 4,
              "images": 5, "model": 21, "dataset": 6, "arch": 18, "device": 3}
    wide = dict((c.key, w) for c, w in fit_columns(needed, 200))
    assert wide["model"] == 21 and wide["device"] == 6  # whole (the label is wider)
    some = dict((c.key, w) for c, w in fit_columns(needed, 110))
    assert some["model"] == 21 and some["dataset"] == 8 and "arch" not in some
    tight = dict((c.key, w) for c, w in fit_columns(needed, 80))
    assert SHORTEST <= tight.get("model", SHORTEST) < 21 and "dataset" not in tight


# -- 5. open lists ------------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("field", ["#device", "#dataset", "#reset"])
async def test_an_open_list_covers_the_labels_beside_it(tmp_path: Path, field: str) -> None:
    app = BsnnApp(tiny(tmp_path))
    async with app.run_test(size=(80, 24)) as pilot:
        app.setup.query_one(field).focus()
        await pilot.press("enter")
        await pilot.pause(0.3)
        select = app.setup.query_one(field, Select)
        box = app.setup.query_one(f"{field} SelectOverlay", SelectOverlay).region
        own = max((label for label in app.setup.query(Label)  # the field's own label
                   if label.region.y == select.region.y and label.region.x < select.region.x),
                  key=lambda label: label.region.x)
        beside = [label for label in app.setup.query(Label)  # its column's, on the list's rows
                  if label.region.x == own.region.x and box.y <= label.region.y < box.bottom]
        assert beside
        for label in beside:  # under the list, not beside it reading as its option
            assert label.region.x >= box.x, str(label.render())


# -- 6. help ------------------------------------------------------------------------------------


def test_the_help_has_no_raw_markup_and_names_every_key_and_export() -> None:
    described = dict(KEYS)
    assert all(name in described["e"] for name in EXPORT_FILES)
    assert "`" not in PANELS and all("`" not in does for does in described.values())
    assert "[" not in Text.from_markup(PANELS).plain
    for binding in BsnnApp.BINDINGS:  # the footer's keys, each explained
        assert (binding.key_display or binding.key) in described  # type: ignore[union-attr]


# -- 7. the overlay -----------------------------------------------------------------------------


def test_the_legend_sits_where_it_hides_the_fewest_dots() -> None:
    def rising(rate: float) -> list[float]:
        return [0.95 * (1 - rate ** t) for t in range(1, 81)]

    curves = [("fast-run", rising(0.6)), ("slow-run", rising(0.9))]
    rows = ["".join(text for text, _ in row)
            for row in plot_lines(curves, 80, None, None, size=(60, 14))]
    at = [(i, row.index("■")) for i, row in enumerate(rows) if "■" in row]
    assert len(at) == 2
    assert all(i >= 5 and col > 30 for i, col in at)  # bottom right, where the runs agree


@pytest.mark.asyncio
async def test_a_run_without_a_curve_cannot_be_marked_and_sets_no_axis(tmp_path: Path) -> None:
    app = BsnnApp(RunConfig(job_dir=str(job_dir_of_three(tmp_path))))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press("r")
        screen = app.screen
        assert isinstance(screen, RunsScreen)
        await wait_for(pilot, lambda: len(screen.entries) == 3, what="the runs")
        assert screen.current().run_dir.name == "20261129-102000-ef56"  # newest: the failed
        overlay = screen.query_one("#overlay", AccuracyPlot)
        assert "no accuracy curve" in str(overlay.border_subtitle)
        await pilot.press("space")
        assert not screen.marked and "no accuracy curve" in notes(app)
        await pilot.press("down", "space", "down", "space")
        await pilot.pause()
        assert sorted(label for label, _ in overlay.curves) == \
            ["20261129-101500-ab12", "20261129-101700-cd34"]
        assert overlay.steps == 16  # the failed run's T (80) does not stretch the axis
