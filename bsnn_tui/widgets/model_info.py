"""The selected model's metadata, so the user sees what they are about to convert."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

from bsnn_tui.feed import Problem
from bsnn_tui.widgets.accuracy import percent


class ModelInfo(Static):
    def loading(self, model: str) -> None:
        self.update(Text(f"reading {model} …", style="dim"))

    def show(self, model: str, meta: dict[str, Any]) -> None:
        if not meta:
            self.update(Text.assemble(
                (model, "bold"), "\nno bsnn metadata (original layout):\n"
                "choose the architecture and data set"))
            return
        kind = "binary weights" if meta.get("binary") else "full precision"
        self.update(Text.assemble(
            (model, "bold"), "\n",
            f"{meta.get('arch')} · {meta.get('dataset')} · {meta.get('num_classes')} classes\n",
            f"{kind} · ANN accuracy {percent(meta.get('ann_accuracy'))}",
        ))

    def fail(self, model: str, problem: Problem) -> None:
        self.update(Text.assemble((model, "bold"), "\n", (problem.message, "red"), "\n",
                                  problem.fix))
