"""A bounded log of the run's phases, warnings and outcome (batches are in the progress line)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import RichLog

from bsnn.events import Event

MAX_LINES = 200


def describe(event: Event) -> Text | None:
    """One line for the events worth reading later; None for the rest."""
    kind = event["type"]
    if kind == "started":
        return Text(f"started {event.get('run_id')} on {event.get('device')}")
    if kind == "phase":
        return Text.assemble((f"{event.get('name')}: ", "bold"), event.get("message") or "")
    if kind == "thresholds":
        return Text(f"thresholds for {len(event.get('layers', []))} layers "
                    f"(p={event.get('percentile')}, per {event.get('granularity')})")
    if kind == "warning":
        return Text.assemble(("warning: ", "bold yellow"), event.get("message") or "")
    if kind == "finished":
        acc = event.get("final_accuracy")
        acc_text = "—" if acc is None else f"{100 * acc:.2f} %"
        return Text(f"finished: {event.get('images')} images, accuracy at T {acc_text}",
                    style="green")
    if kind == "failed":
        return Text.assemble(("failed: ", "bold red"), event.get("message") or "",
                             f" — {event.get('fix')}" if event.get("fix") else "")
    if kind == "cancelled":
        return Text(f"cancelled after {event.get('images')} images", style="yellow")
    return None


class RunLog(RichLog):
    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, max_lines=MAX_LINES, min_width=20, wrap=True, markup=False)

    def add(self, events: list[Event]) -> None:
        lines = [line for line in map(describe, events) if line is not None]
        for line in lines:
            self.write(line, scroll_end=False)
        if lines:  # once laid out: lines written before the first layout have no height yet
            self.call_after_refresh(self.scroll_end, animate=False)
