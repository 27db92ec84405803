"""A bounded log of the run's phases, warnings and outcome (batches are in the progress line)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

from bsnn.events import BatchDone, Cancelled, Event, Failed, Finished, RunWarning, describe

MAX_LINES = 200
STYLES: dict[type[Event], str] = {RunWarning: "yellow", Failed: "bold red",
                                  Cancelled: "yellow", Finished: "green"}


def log_line(event: Event) -> Text | None:
    """The event in words (bsnn.events.describe), styled by kind; None for batches."""
    if isinstance(event, BatchDone):
        return None
    return Text(describe(event), style=STYLES.get(type(event), ""))


class RunLog(RichLog):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=MAX_LINES, min_width=20, wrap=True, markup=False)

    def add(self, events: list[Event]) -> None:
        lines = [line for line in map(log_line, events) if line is not None]
        for line in lines:
            self.write(line, scroll_end=False)
        if lines:  # once laid out: lines written before the first layout have no height yet
            self.call_after_refresh(self.scroll_end, animate=False)
