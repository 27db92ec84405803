"""The setup screen: one RunConfig as a form, every field checked against the whole form.

Its fields (labels, choices, defaults, checks) are the run options marked `form` in the table of
bsnn.options, in the table's order, so the form, the flags and the engine never disagree about
what is allowed. The form opens instantly with the values from the command line; the lists that
need torch (bundled models, architectures, CUDA devices) and the selected model's metadata are
filled in by workers once the screen is up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.timer import Timer
from textual.validation import ValidationResult, Validator
from textual.widget import Widget
from textual.widgets import Button, Footer, Header, Input, Label, Select, Static
from textual.worker import Worker, WorkerState

from bsnn.config import RunConfig
from bsnn.errors import ConfigError
from bsnn.options import OPTION, OPTIONS, Option
from bsnn_tui import catalog
from bsnn_tui.feed import Problem
from bsnn_tui.producers import RUN_MODES, resolve_run_mode
from bsnn_tui.widgets.model_info import ModelInfo

FORM = tuple(o for o in OPTIONS if o.form)
FOUND_HERE = ("arch", "device")  # choices the catalog finds on this machine (after torch loads)
FIRST_DEVICES = [("auto", "auto"), ("cpu", "cpu")]  # until the catalog has asked torch
FROM_CHECKPOINT = ""  # the Select value for "whatever the checkpoint says" (the option's None)
NO_DATA_PATH = {"digits"}  # bundled with scikit-learn: no folder to point at
DESCRIBE_DELAY_S = 0.4  # wait for the user to stop typing a path before reading the file


def reason(error: ConfigError) -> str:
    return f"{error.message} — {error.fix}" if error.fix else error.message


class FormCheck(Validator):
    """One typed field, checked by its option as RunConfig.validate checks it, against the whole
    form (`form()`: every field's value): a readout delay must stay below the form's T."""

    def __init__(self, option: Option, form: Callable[[], dict[str, Any]]) -> None:
        super().__init__()
        self.option = option
        self.form = form

    def validate(self, value: str) -> ValidationResult:
        try:
            parsed = self.option.parse(value)
            self.option.validate(parsed, {**self.form(), self.option.name: parsed})
        except ConfigError as e:
            return self.failure(reason(e))
        return self.success()


def choice(widget_id: str, options: list[tuple[str, str]], value: str) -> Select[str]:
    """A compact Select that lets letters through to the app's keys (no type-to-search)."""
    if value not in [v for _, v in options]:
        options = [*options, (value, value)]
    return Select(options, value=value, allow_blank=False, compact=True,
                  type_to_search=False, id=widget_id)


def first_options(option: Option) -> list[tuple[str, str]]:
    """The choices known before the catalog: the table's (devices: auto and cpu), after
    "from checkpoint" where None is a value."""
    known = FIRST_DEVICES if option.name == "device" else [(v, v) for v in option.choices]
    return [("from checkpoint", FROM_CHECKPOINT)] * option.optional + known


class SetupScreen(Screen[None]):
    """The form. `config()` is what the app starts; the reasons a value is wrong are shown
    beside the form as the user types."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "leave_field", "Leave field", show=False),
    ]
    TITLE = "bsnn"
    SUB_TITLE = "set up a run"

    def __init__(self, config: RunConfig, run_mode: str = "auto", *,
                 defer_loading: bool = False) -> None:
        super().__init__()
        self.initial = config
        self.initial_run_mode = run_mode
        # A viewer opened on a run (--attach) leaves torch unloaded (about 400 MB) until the
        # form is first shown: it is under the run's screen from the start.
        self.loaded = False
        self._defer_loading = defer_loading
        self._suspended = False
        self.cuda: bool | None = None  # whether torch sees CUDA: known once the catalog is in
        self.meta: dict[str, Any] = {}
        self.unreadable: tuple[str, ConfigError] | None = None  # a model describe could not read
        self.reasons: dict[str, str] = {}
        self._describe_timer: Timer | None = None
        self._describing = ""

    def compose(self) -> ComposeResult:
        yield Header()
        with Grid(id="fields"):
            for option in FORM:
                yield from self.field(option)
            yield Label("run mode")
            yield choice("run_mode", self.run_mode_options(self.initial.device),
                         self.initial_run_mode)
        with Horizontal(id="below"):
            yield ModelInfo(id="model-info")
            with Vertical(id="checks"):
                yield Static(id="problems")
                yield Button("Start ▶  ctrl+s", id="start", variant="primary", compact=True)
        yield Footer()

    def field(self, option: Option) -> Iterator[Widget]:
        """The option's label and widget, holding the initial config's value."""
        value = getattr(self.initial, option.name)
        yield Label(option.label)
        if option.name == "model":
            yield from self.model_fields()
        elif option.choices or option.name in FOUND_HERE:
            yield choice(option.name, first_options(option),
                         FROM_CHECKPOINT if value is None else value)
        else:  # empty is None where None is a value: "from checkpoint", as the selects say
            yield Input("" if value is None else str(value), compact=True, id=option.name,
                        placeholder="from checkpoint" if option.optional else "",
                        validators=[FormCheck(option, self.values)])

    def model_fields(self) -> Iterator[Widget]:
        """A bundled model to select, or a path to type (which wins when there is one)."""
        model = self.initial.model
        typed_path = not model.startswith("bundled:")
        default = OPTION["model"].default
        yield choice("model", [(default, default)], default if typed_path else model)
        yield Label("or path")
        yield Input(model if typed_path else "", placeholder="a checkpoint .pt", compact=True,
                    id="model_path")

    def on_mount(self) -> None:
        self.query_one("#model-info", ModelInfo).border_title = "model"
        self.query_one("#checks").border_title = "check"
        self.check_form()
        if not self._defer_loading:
            # After the first paint: importing torch in a thread holds the GIL for seconds.
            self.call_after_refresh(self.load_lazily)

    def on_screen_suspend(self) -> None:
        self._suspended = True

    def on_screen_resume(self) -> None:
        if self._suspended and not self.loaded:  # back from the run it was opened on
            self.call_after_refresh(self.load_lazily)

    def load_lazily(self) -> None:
        self.loaded = True
        self.load_catalog()
        self.describe(self.model())

    # -- what the form says ------------------------------------------------------------------

    def model(self) -> str:
        """The typed path if there is one, else the selected model."""
        return self.query_one("#model_path", Input).value.strip() or str(
            self.query_one("#model", Select).value)

    def config(self) -> RunConfig:
        """The form as a validated RunConfig; raises ConfigError naming the first bad value,
        a missing or unreadable model included (before any run folder is made for it)."""
        config = RunConfig(**self.values(strict=True)).validate()
        error = self.model_error(config.model)
        if error is not None:
            raise error
        return config

    def model_error(self, model: str) -> ConfigError | None:
        """Why the model cannot run, as far as the form can tell: a path that names no file
        (checked here, at once), or a file the model panel could not read. The option's own
        check cannot know, and the engine would find out only inside a new run folder."""
        if not model.startswith("bundled:") and not Path(model).is_file():
            return ConfigError(f"model file {model} not found",
                               "type the path of a checkpoint .pt, or clear the path to use "
                               "the selected bundled model")
        if self.unreadable is not None and self.unreadable[0] == model:
            return self.unreadable[1]
        return None

    def values(self, strict: bool = False) -> dict[str, Any]:
        """The whole form as option values, over the initial config's (for the options not on
        the form). A field that does not parse keeps its initial value (its own check says
        why), or with `strict` raises ConfigError."""
        values = self.initial.to_dict()
        for option in FORM:
            try:
                values[option.name] = self.value_of(option)
            except (ConfigError, NoMatches):  # NoMatches: not composed yet
                if strict:
                    raise
        return values

    def value_of(self, option: Option) -> Any:
        """One field's value, typed as its option's."""
        if option.name == "model":
            return self.model()
        if option.name == "job_dir":
            return self.job_dir()
        widget = self.query_one(f"#{option.name}")
        if isinstance(widget, Input):
            return option.parse(widget.value)
        value = self.query_one(f"#{option.name}", Select).value
        return None if option.optional and value == FROM_CHECKPOINT else value

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
        self.check_form()
        if event.input.id == "model_path":
            if self._describe_timer is not None:
                self._describe_timer.stop()
            self._describe_timer = self.set_timer(DESCRIBE_DELAY_S,
                                                  lambda: self.describe(self.model()))

    @on(Input.Submitted)
    @on(Button.Pressed, "#start")
    async def _start(self) -> None:
        await self.app.run_action("start")

    @on(Select.Changed)
    def _select_changed(self) -> None:
        self.check_form()

    @on(Select.Changed, "#model")
    def _model_changed(self) -> None:
        self.describe(self.model())

    @on(Select.Changed, "#dataset")
    def _dataset_changed(self) -> None:
        self.update_data_path()

    @on(Select.Changed, "#device")
    def _device_changed(self) -> None:
        self.show_run_mode()

    def check_form(self) -> None:
        """Every field against the whole form (a new T can make the readout delay wrong); the
        reasons go beside the form, and Start refuses while there is one."""
        values = self.values()
        problems = {option.name: self.problem(option, values) for option in FORM}
        self.reasons = {name: text for name, text in problems.items() if text}
        box = self.query_one("#problems", Static)
        box.set_class(bool(self.reasons), "-invalid")
        box.update("\n".join(self.reasons.values()) if self.reasons
                   else "all values valid — ctrl+s starts")

    def problem(self, option: Option, values: dict[str, Any]) -> str | None:
        """Why one field's value cannot run, or None; a typed field is marked invalid, too."""
        if option.name == "model" and (error := self.model_error(self.model())) is not None:
            return reason(error)
        widget = self.query_one(f"#{option.name}")
        if isinstance(widget, Input):
            result = widget.validate(widget.value)
            return result.failure_descriptions[0] if result and not result.is_valid else None
        try:
            option.validate(self.value_of(option), values)
        except ConfigError as e:
            return reason(e)
        return None

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
        if not self.loaded:  # load_lazily describes the model the form holds by then
            return
        self.query_one("#model-info", ModelInfo).loading(model)
        self._describing = model  # the describe worker is exclusive: this is the one that ends
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
            self.unreadable = None
            self.query_one("#model-info", ModelInfo).show(model, self.meta)
            self.update_data_path()
            self.check_form()
        elif worker.group == "describe" and worker.state == WorkerState.ERROR:
            self.meta = {}
            problem = Problem.from_exception(worker.error, None)
            self.unreadable = (self._describing, ConfigError(problem.message, problem.fix))
            self.query_one("#model-info", ModelInfo).fail(self._describing, problem)
            self.update_data_path()
            self.check_form()

    def apply_catalog(self, found: catalog.Catalog) -> None:
        """Swap in the full lists, keeping whatever the user has selected meanwhile."""
        lists = {
            "model": [(m, m) for m in found.models],
            "arch": [*first_options(OPTION["arch"]), *((a, a) for a in found.archs)],
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
