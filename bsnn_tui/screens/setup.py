"""The setup screen: one RunConfig as a form, each value checked as it is typed.

The form opens instantly with the values from the command line; the lists that need torch
(bundled models, architectures, CUDA devices) and the selected model's metadata are filled in
by workers once the screen is up.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.validation import ValidationResult, Validator
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static
from textual.worker import Worker, WorkerState

from bsnn.config import CHOICES, RunConfig
from bsnn.errors import ConfigError
from bsnn_tui import catalog
from bsnn_tui.feed import Problem
from bsnn_tui.producers import RUN_MODES, resolve_run_mode
from bsnn_tui.widgets.model_info import ModelInfo

# Typed fields: id (= RunConfig field) -> (label, parser).
NUMBERS: dict[str, tuple[str, type[int] | type[float]]] = {
    "percentile": ("percentile", float),
    "time": ("time steps T", int),
    "batch_size": ("batch size", int),
    "eval_size": ("eval size", int),
    "norm": ("norm (calib.)", int),
    "seed": ("seed", int),
    "readout_delay": ("readout delay", int),
}
CHOICE_LABELS = {
    "propagation": "propagation",
    "reset": "reset",
    "v0": "v0",
    "encoding": "encoding",
    "threshold_granularity": "thresholds per",
    "snn_calibration": "SNN calib.",
}
FROM_CHECKPOINT = ""  # the Select value for "whatever the checkpoint says"
NO_DATA_PATH = {"digits"}  # bundled with scikit-learn: no folder to point at
DESCRIBE_DELAY_S = 0.4  # wait for the user to stop typing a path before reading the file


def parse_number(name: str, parse: type[int] | type[float], text: str) -> int | float:
    """The typed text as the field's type; ConfigError names the field when it is not one."""
    try:
        return parse(text.strip())
    except ValueError:
        kind = "a whole number" if parse is int else "a number"
        raise ConfigError(f"{name} {text.strip()!r} is not {kind}", f"type {kind}") from None


class ConfigField(Validator):
    """Checks one typed value exactly as RunConfig.validate does, so the form and the engine
    never disagree about what is allowed."""

    def __init__(self, name: str, parse: type[int] | type[float]) -> None:
        super().__init__()
        self.name = name
        self.parse = parse

    def validate(self, value: str) -> ValidationResult:
        try:
            RunConfig(**{self.name: parse_number(self.name, self.parse, value)}).validate()
        except ConfigError as e:
            return self.failure(f"{e.message} — {e.fix}" if e.fix else e.message)
        return self.success()


def choice(widget_id: str, options: list[tuple[str, str]], value: str) -> Select[str]:
    """A compact Select that lets letters through to the app's keys (no type-to-search)."""
    if value not in [v for _, v in options]:
        options = [*options, (value, value)]
    return Select(options, value=value, allow_blank=False, compact=True,
                  type_to_search=False, id=widget_id)


class SetupScreen(Screen[None]):
    """The form. `config()` is what the app starts; the reasons a value is wrong are shown
    beside the form as the user types."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "leave_field", "Leave field", show=False),
    ]
    TITLE = "bsnn"
    SUB_TITLE = "set up a run"

    def __init__(self, config: RunConfig, run_mode: str = "auto") -> None:
        super().__init__()
        self.initial = config
        self.initial_run_mode = run_mode
        self.cuda: bool | None = None  # whether torch sees CUDA: known once the catalog is in
        self.meta: dict[str, Any] = {}
        self.reasons: dict[str, str] = {}
        self._describe_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        c = self.initial
        typed_path = not c.model.startswith("bundled:")
        default_model = RunConfig().model
        yield Header()
        with Grid(id="fields"):
            yield Label("model")
            yield choice("model", [(default_model, default_model)],
                         default_model if typed_path else c.model)
            yield Label("or path")
            yield Input(c.model if typed_path else "", placeholder="a checkpoint .pt",
                        compact=True, id="model_path")
            yield Label("data set")
            yield choice("dataset", [("from checkpoint", FROM_CHECKPOINT)],
                         c.dataset or FROM_CHECKPOINT)
            yield Label("data path")
            yield Input(c.data, compact=True, id="data")
            yield Label("arch")
            yield choice("arch", [("from checkpoint", FROM_CHECKPOINT)],
                         c.arch or FROM_CHECKPOINT)
            yield Label("device")
            yield choice("device", [("auto", "auto"), ("cpu", "cpu")], c.device)
            for name, (label, parse) in NUMBERS.items():
                yield Label(label)
                yield Input(str(getattr(c, name)), compact=True, id=name,
                            validators=[ConfigField(name, parse)])
            for name, label in CHOICE_LABELS.items():
                yield Label(label)
                yield choice(name, [(v, v) for v in CHOICES[name]], getattr(c, name))
            yield Label("job dir")
            yield Input(c.job_dir, compact=True, id="job_dir")
            yield Label("run mode")
            yield choice("run_mode", self.run_mode_options(c.device), self.initial_run_mode)
        with Horizontal(id="below"):
            yield ModelInfo(id="model-info")
            with Vertical(id="checks"):
                yield Static(id="problems")
                yield Button("Start ▶", id="start", variant="primary", compact=True)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#model-info", ModelInfo).border_title = "model"
        self.query_one("#checks").border_title = "check"
        self.show_reasons()
        # After the first paint: importing torch in a thread holds the GIL for seconds.
        self.call_after_refresh(self.load_lazily)

    def load_lazily(self) -> None:
        self.load_catalog()
        self.describe(self.model())

    # -- what the form says ------------------------------------------------------------------

    def model(self) -> str:
        """The typed path if there is one, else the selected model."""
        return self.query_one("#model_path", Input).value.strip() or str(
            self.query_one("#model", Select).value)

    def config(self) -> RunConfig:
        """The form as a validated RunConfig; raises ConfigError naming the first bad value."""
        values: dict[str, Any] = {
            name: parse_number(name, parse, self.query_one(f"#{name}", Input).value)
            for name, (_, parse) in NUMBERS.items()
        }
        values.update({name: self.query_one(f"#{name}", Select).value for name in CHOICE_LABELS})
        dataset = self.query_one("#dataset", Select).value
        arch = self.query_one("#arch", Select).value
        return replace(
            self.initial, model=self.model(), dataset=dataset or None, arch=arch or None,
            data=self.query_one("#data", Input).value.strip(),
            device=str(self.query_one("#device", Select).value),
            job_dir=self.job_dir(), **values,
        ).validate()

    def job_dir(self) -> str:
        return self.query_one("#job_dir", Input).value.strip() or self.initial.job_dir

    def run_mode(self) -> str:
        """auto, in-process or detached, as selected (the app resolves auto when it starts)."""
        return str(self.query_one("#run_mode", Select).value)

    def run_mode_options(self, device: str) -> list[tuple[str, str]]:
        """The run modes, `auto` labelled with what it means here once that is known (torch
        says whether there is CUDA; it is never imported for this on the UI thread)."""
        known = self.cuda is not None or device != "auto"
        auto = f"auto → {resolve_run_mode('auto', device, self.cuda)}" if known else "auto"
        return [(auto if mode == "auto" else mode, mode) for mode in RUN_MODES]

    def show_run_mode(self) -> None:
        select = self.query_one("#run_mode", Select)
        value = select.value
        with select.prevent(Select.Changed):
            select.set_options(self.run_mode_options(str(self.query_one("#device",
                                                                        Select).value)))
            select.value = value
            select.mutate_reactive(Select.value)  # the same value, a new label: redraw it

    # -- reacting to input -------------------------------------------------------------------

    @on(Input.Changed)
    def _input_changed(self, event: Input.Changed) -> None:
        name = event.input.id or ""
        if event.validation_result is not None:
            failures = event.validation_result.failure_descriptions
            if failures:
                self.reasons[name] = failures[0]
            else:
                self.reasons.pop(name, None)
            self.show_reasons()
        if name == "model_path":
            if self._describe_timer is not None:
                self._describe_timer.stop()
            self._describe_timer = self.set_timer(DESCRIBE_DELAY_S,
                                                  lambda: self.describe(self.model()))

    @on(Input.Submitted)
    @on(Button.Pressed, "#start")
    async def _start(self) -> None:
        await self.app.run_action("start")

    @on(Select.Changed, "#model")
    def _model_changed(self) -> None:
        self.describe(self.model())

    @on(Select.Changed, "#dataset")
    def _dataset_changed(self) -> None:
        self.update_data_path()

    @on(Select.Changed, "#device")
    def _device_changed(self) -> None:
        self.show_run_mode()

    def show_reasons(self) -> None:
        box = self.query_one("#problems", Static)
        box.set_class(bool(self.reasons), "-invalid")
        box.update("\n".join(self.reasons.values()) if self.reasons
                   else "all values valid — Enter or s starts")

    def update_data_path(self) -> None:
        """The data path matters only for data sets read from disk."""
        dataset = self.query_one("#dataset", Select).value or self.meta.get("dataset")
        self.query_one("#data", Input).disabled = dataset in NO_DATA_PATH

    def action_leave_field(self) -> None:
        """Escape leaves a text field, so single-letter keys reach the app again."""
        self.query_one("#start", Button).focus()

    # -- lazy loading ------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="catalog")
    def load_catalog(self) -> catalog.Catalog:
        return catalog.discover(Path.cwd())

    def describe(self, model: str) -> None:
        self.query_one("#model-info", ModelInfo).loading(model)
        self._describe(model)

    @work(thread=True, exclusive=True, exit_on_error=False, group="describe")
    def _describe(self, model: str) -> tuple[str, dict[str, Any]]:
        return model, catalog.describe_model(model)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group == "catalog" and worker.state == WorkerState.SUCCESS:
            self.apply_catalog(worker.result)
        elif worker.group == "catalog" and worker.state == WorkerState.ERROR:
            problem = Problem.from_exception(worker.error, None)
            self.notify(f"{problem.message}\n{problem.fix}", title="could not list models",
                        severity="warning")
        elif worker.group == "describe" and worker.state == WorkerState.SUCCESS:
            model, self.meta = worker.result
            self.query_one("#model-info", ModelInfo).show(model, self.meta)
            self.update_data_path()
        elif worker.group == "describe" and worker.state == WorkerState.ERROR:
            self.meta = {}
            self.query_one("#model-info", ModelInfo).fail(
                self.model(), Problem.from_exception(worker.error, None))
            self.update_data_path()

    def apply_catalog(self, found: catalog.Catalog) -> None:
        """Swap in the full lists, keeping whatever the user has selected meanwhile."""
        lists = {
            "model": [(m, m) for m in found.models],
            "dataset": [("from checkpoint", FROM_CHECKPOINT), *((d, d) for d in found.datasets)],
            "arch": [("from checkpoint", FROM_CHECKPOINT), *((a, a) for a in found.archs)],
            "device": found.devices,
        }
        for name, options in lists.items():
            select = self.query_one(f"#{name}", Select)
            value = select.value
            if value not in [v for _, v in options]:
                options = [*options, (str(value), value)]
            with select.prevent(Select.Changed):
                select.set_options(options)
                select.value = value
        self.cuda = any(value.startswith("cuda") for _, value in found.devices)
        self.show_run_mode()
