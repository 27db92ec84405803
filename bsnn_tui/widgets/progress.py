"""Where the run is: status, phase, images done, throughput, ETA — and, when it stopped, why."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, ProgressBar, Static

from bsnn.summary import Summary
from bsnn_tui.feed import Problem

STATUS_STYLE = {
    "running": "bold cyan",
    "finished": "bold green",
    "failed": "bold red",
    "cancelled": "bold yellow",
    "interrupted": "bold magenta",
    "waiting": "bold",
}


def duration(seconds: float) -> str:
    h, rest = divmod(round(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def throughput_line(summary: Summary) -> str:
    """Images done of total, images/s and the time left at that pace."""
    done, total = summary.images, summary.images_total
    parts = [f"{done:,} / {total:,} images" if total else f"{done:,} images"]
    speed = summary.images_per_s
    if speed:
        parts.append(f"{speed:,.1f} img/s")
        if summary.status == "running" and total:
            parts.append(f"ETA {duration(max(0, total - done) / speed)}")
    group = summary.distributed
    if group and group["images_per_rank"]:  # torchrun: each rank's share
        parts.append("ranks " + " + ".join(f"{n:,}" for n in group["images_per_rank"]))
    if summary.wall_time_s is not None:
        parts.append(f"elapsed {duration(summary.wall_time_s)}")
    return " · ".join(parts)


class RunProgress(Vertical):
    DEFAULT_CSS = """
    RunProgress { height: auto; }
    RunProgress Horizontal { height: 1; }
    RunProgress #status { width: auto; margin-right: 1; }
    RunProgress #figures { width: 1fr; }
    RunProgress ProgressBar { width: 1fr; }
    RunProgress #problem { color: $error; height: auto; }
    """

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Label(id="status")
            yield ProgressBar(show_eta=False, id="bar")
        yield Label(id="figures")
        yield Static(id="problem")

    def show(self, summary: Summary, problem: Problem | None, active: bool) -> None:
        """`problem`: why the producer stopped, if it did not say so in the log itself. Only
        what changed is repainted, and laid out again only when its size may have changed."""
        status = summary.status
        if status in ("running", "interrupted") and problem is not None:
            status = "failed"  # stopped by an error before its log could say so
        elif status == "interrupted" and active:
            status = "waiting"  # the engine is still loading; no `started` yet
        title = Text.assemble((f" {status.upper()} ", f"reverse {STATUS_STYLE[status]}"),
                              f" {summary.run_id or ''}")
        if summary.phase and status == "running":
            title.append(f" · {summary.phase}", style="dim")
        relabel(self.query_one("#status", Label), title)
        # an empty bar, not the indeterminate one, until the total is known: its animation
        # repaints many times a second, CPU the engine could use
        self.query_one("#bar", ProgressBar).update(total=summary.images_total or 1,
                                                   progress=summary.images)
        relabel(self.query_one("#figures", Label), Text(throughput_line(summary)))
        box = self.query_one("#problem", Static)
        box.display = problem is not None
        if problem is not None:
            relabel(box, Text.assemble(("✗ ", "bold"), problem.message, "\n",
                                       ("fix: ", "bold"), problem.fix))


def relabel(label: Static, text: Text) -> None:
    """Show `text` unless it is shown already, laying the screen out again (which redoes every
    panel) only when the label's size may change."""
    shown = label.content
    if isinstance(shown, Text) and shown == text:
        return
    label.update(text, layout=resizes(label, shown, text))


def resizes(label: Static, old: object, new: Text) -> bool:
    """Whether `new` may need another size than `old`: a label as wide as its text when the
    length changes, a label of fixed width when either text no longer fits on one line."""
    if not isinstance(old, Text) or "\n" in old.plain + new.plain:
        return True
    width = label.styles.width
    if width is None or width.is_auto:
        return old.cell_len != new.cell_len
    return max(old.cell_len, new.cell_len) > label.content_size.width
