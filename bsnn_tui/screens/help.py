"""The help screen: every key, and what the panels mean, without leaving the keyboard."""

from __future__ import annotations

from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from bsnn.exports import EXPORT_FILES

EXPORTS = ", ".join(EXPORT_FILES)  # what `e` writes, named as the exporter names it
KEYS = (
    ("ctrl+s", "start a run with the form's values (so do Enter in a field and Enter on "
               "Start)"),
    ("c", "cancel the running run (or the attached one on screen), after you say yes: it "
          "stops after the batch in flight and keeps what was done"),
    ("e", f"export {EXPORTS}"),
    ("n", "back to the form for a new run"),
    ("r", "the runs in the job dir: Space marks runs to overlay, Enter opens one"),
    ("Esc", "leave a text field, or go back"),
    ("Tab", "next field or panel; arrow keys scroll a panel"),
    ("ctrl+p", "command palette: every action by name"),
    ("?", "this help"),
    ("q", "quit: a detached run goes on; an in-process run would stop, so it asks first "
          "(its log is kept)"),
)
# Rich markup: names of keys and commands in bold (the help is not Markdown).
PANELS = """\
[bold]accuracy vs t[/] — the SNN's accuracy at each time step; the grey line is the ANN's \
accuracy on the same images, the green line the step from which the SNN stays within 1 point \
of it.
[bold]layers[/] — per layer: its threshold (a range when set per channel), synaptic operations \
per image, its firing rate at each step (how long it takes to settle) and on average, beside \
the rate its ANN activation predicts. A narrow terminal leaves out the per-step heatmap and the \
bars, never a figure.

A run keeps going when you leave its screen; [bold]r[/] finds it again. Every figure comes from \
the run's events.jsonl, so [bold]bsnn-tui --attach RUN_DIR[/] shows a run started elsewhere.

Run mode: [bold]detached[/] starts the engine as a process of its own that outlives the \
dashboard and the terminal; [bold]in-process[/] runs it inside the dashboard; [bold]auto[/] is \
detached on CUDA."""


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        keys = Table(box=None, show_header=False, padding=(0, 1))
        keys.add_column(style="bold", no_wrap=True)
        keys.add_column()
        for key, does in KEYS:
            keys.add_row(key, does)
        with VerticalScroll(id="help"):
            yield Static(Group(Text("bsnn-tui keys", style="bold"), keys, Text(),
                               Text.from_markup(PANELS)))

    def on_mount(self) -> None:
        self.query_one("#help").border_title = "help · Esc closes"
