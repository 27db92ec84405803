"""The selected model's metadata, so the user sees what they are about to convert."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from bsnn_tui.catalog import ORIGINAL_LAYOUT
from bsnn_tui.feed import Problem
from bsnn_tui.widgets.accuracy import percent


class ModelInfo(Static):
    def loading(self, model: str) -> None:
        self.update(Text(f"reading {model} …", style="dim"))

    def show(self, model: str, meta: dict[str, Any]) -> None:
        """`meta` as bsnn_tui.catalog.describe_model gives it."""
        kind = "binary weights" if meta.get("binary") else "full precision"
        if meta.get("source") == ORIGINAL_LAYOUT:
            self.update(Text.assemble(
                (model, "bold"), "\nno bsnn metadata (original layout):\n"
                "choose the architecture and data set\n", f"{kind} (read from the weights)"))
            return
        width = meta.get("width", 1.0)
        self.update(Text.assemble(
            (model, "bold"), "\n",
            f"{meta.get('arch')}{f' x{width:g}' if width != 1 else ''} · {meta.get('dataset')} · "
            f"{meta.get('num_classes')} classes\n",
            f"{kind} · ANN accuracy {percent(meta.get('ann_accuracy'))}",
        ))

    def fail(self, model: str, problem: Problem) -> None:
        self.update(Text.assemble((model, "bold"), "\n", (problem.message, "red"), "\n",
                                  problem.fix))
