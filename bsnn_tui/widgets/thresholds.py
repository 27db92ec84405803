"""Thresholds per layer (a range when they are per channel) and synaptic operations per image:
what the conversion chose and what it costs. Its rows name the layers for the panels beside it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.cells import cell_len
from rich.table import Table
from textual.widgets import Static

Cells = tuple[tuple[str, ...], ...]  # header, rows, footer: every cell as its text


def threshold_text(layer: dict[str, Any]) -> str:
    lo, hi = layer.get("threshold_min"), layer.get("threshold_max")
    if lo is not None and hi is not None and f"{lo:.3g}" != f"{hi:.3g}":
        return f"{lo:.3g}–{hi:.3g}"
    th = layer.get("threshold")
    return "output" if th is None else f"{th:.4g}"


def count(x: float | None) -> str:
    """Large counts stay readable in a narrow column: 1.2M, 35.0k."""
    if x is None:
        return "—"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= limit:
            return f"{x / limit:.1f}{suffix}"
    return f"{x:.0f}"


def table_shape(cells: Cells) -> tuple[int, ...]:
    """The row count and each column's widest cell: while they stay, so does the table's size."""
    return (len(cells), *(max(map(cell_len, column)) for column in zip(*cells, strict=True)))


class CellsTable(Static):
    """A table of text cells that repaints only when a cell changed, and asks for a new layout
    (which redoes the whole screen) only when its size may have: most batches of a run change
    a figure or two, or nothing that the table shows."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._cells: Cells = ()

    def paint(self, cells: Cells, table: Callable[[], Table]) -> None:
        """Show `table()` when `cells` (what it shows, as text) differ from what is shown."""
        if cells == self._cells:
            return
        layout = not self._cells or table_shape(cells) != table_shape(self._cells)
        self._cells = cells
        self.update(table(), layout=layout)


class ThresholdsTable(CellsTable):
    """Per layer: threshold, synaptic operations, the SNN's energy estimate and r, how closely
    its rates follow the ANN (docs/operations.md); the footer adds the ANN / SNN energy."""

    def show(self, summary: dict[str, Any]) -> None:
        rows = tuple((layer["name"] + (" ±" if layer.get("binary") else ""),
                      count(layer["neurons"]), threshold_text(layer),
                      count(layer["synops_per_image"]), nanojoules(layer.get("snn_energy_pj")),
                      correlation(layer.get("correlation"))) for layer in summary["layers"])
        energy = summary.get("energy") or {}
        ratio = energy.get("energy_ratio")
        footer = ("total", "", "", count(summary["synops_per_image"]),
                  nanojoules(energy.get("snn_energy_pj")),
                  "" if ratio is None else f"ANN/SNN {ratio:.2f}x")
        head = ("layer", "neurons", "θ", "synops/img", "nJ/img", "r")

        def table() -> Table:
            t = Table(box=None, padding=(0, 1, 0, 0), show_edge=False, show_footer=True)
            for i, name in enumerate(head):
                t.add_column(name, footer[i], justify="left" if i == 0 else "right",
                             no_wrap=True)
            for row in rows:
                t.add_row(*row)
            return t

        self.paint((head, *rows, footer), table)


def nanojoules(pj: float | None) -> str:
    return "—" if pj is None else count(pj / 1e3)


def correlation(r: float | None) -> str:
    return "—" if r is None else f"{r:.3f}"
