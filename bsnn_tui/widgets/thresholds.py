"""Thresholds per layer (a range when they are per channel) and synaptic operations per image:
what the conversion chose and what it costs. Its rows name the layers for the panels beside it."""

from __future__ import annotations

from rich.cells import cell_len
from rich.text import Text
from textual.widgets import Static

from bsnn.summary import LayerSummary, Summary

Cells = tuple[tuple[str, ...], ...]  # header, rows, footer: every cell as its text


def threshold_text(layer: LayerSummary) -> str:
    lo, hi = layer.threshold_min, layer.threshold_max
    if lo is not None and hi is not None and f"{lo:.3g}" != f"{hi:.3g}":
        return f"{lo:.3g}–{hi:.3g}"
    th = layer.threshold
    return "output" if th is None else f"{th:.4g}"


def count(x: float | None) -> str:
    """Large counts stay readable in a narrow column: 1.2M, 35.0k."""
    if x is None:
        return "—"
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= limit:
            return f"{x / limit:.1f}{suffix}"
    return f"{x:.0f}"


def table_shape(cells: Cells, least: tuple[int, ...] = ()) -> tuple[int, ...]:
    """The row count and each column's width, its widest cell or its `least` width: while
    they stay, so does the table's size."""
    widths = [max(map(cell_len, column)) for column in zip(*cells, strict=True)]
    return (len(cells), *(max(w, n) for w, n in zip(widths, [*least, *[0] * len(widths)],
                                                    strict=False)))


class CellsTable(Static):
    """A table of text cells, drawn as aligned lines: rich's Table measured and wrapped every
    cell on each repaint, the dearest part of a redraw. It repaints only when a cell changed,
    and asks for a new layout (which redoes the whole screen) only when its size may have:
    most batches of a run change a figure or two, or nothing that the table shows."""

    PADDING = (0, 1)  # spaces before and after every cell
    LEFT_COLUMNS = 1  # the first columns are justified left, the others right
    BODY_STYLES: tuple[str, ...] = ()  # a style per column for the rows between head and foot
    # Each column's width before its figures arrive: as wide as they will be, so the first batch
    # moves no column (and the panels beside it keep their size).
    LEAST_WIDTHS: tuple[int, ...] = ()

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._cells: Cells = ()

    def paint(self, cells: Cells) -> None:
        """Show `cells` (a header row, the rows, a footer row) unless they are shown already."""
        if cells == self._cells:
            return
        least = self.LEAST_WIDTHS
        layout = not self._cells or table_shape(cells, least) != table_shape(self._cells, least)
        self._cells = cells
        self.update(self.lines(cells), layout=layout)

    def lines(self, cells: Cells) -> Text:
        """Each column as wide as its widest cell; the header and the footer in bold."""
        widths = table_shape(cells, self.LEAST_WIDTHS)[1:]
        before, after = (" " * n for n in self.PADDING)
        text = Text(no_wrap=True, end="")
        for i, row in enumerate(cells):
            edge = "bold" if i in (0, len(cells) - 1) else ""
            for j, (cell, width) in enumerate(zip(row, widths, strict=True)):
                gap = " " * (width - cell_len(cell))
                style = edge or (self.BODY_STYLES[j] if j < len(self.BODY_STYLES) else "")
                shown = cell + gap if j < self.LEFT_COLUMNS else gap + cell
                text.append(before, edge).append(shown, style).append(after, edge)
            if i < len(cells) - 1:
                text.append("\n")
        return text


class ThresholdsTable(CellsTable):
    """Per layer: threshold, synaptic operations, the SNN's energy estimate and r, how closely
    its rates follow the ANN (docs/operations.md); the footer adds the totals. (The ANN / SNN
    energy ratio is in the panel's subtitle: in the r column it widened the table.)"""

    LEAST_WIDTHS = (0, len("123.4k"), len("output"), 0, len("123.4k"), len("-0.123"))

    def show(self, summary: Summary) -> None:
        rows = tuple((layer.name + (" ±" if layer.binary else ""),
                      count(layer.neurons), threshold_text(layer),
                      count(layer.synops_per_image), nanojoules(layer.snn_energy_pj),
                      correlation(layer.correlation)) for layer in summary.layers)
        energy = summary.energy or {}
        footer = ("total", "", "", count(summary.synops_per_image),
                  nanojoules(energy.get("snn_energy_pj")), "")
        self.paint((("layer", "neurons", "θ", "synops/img", "nJ/img", "r"), *rows, footer))


def energy_ratio(summary: Summary) -> str:
    """The ANN's energy over the SNN's, for the layers panel's subtitle ("" until known)."""
    ratio = (summary.energy or {}).get("energy_ratio")
    return "" if ratio is None else f"energy ANN/SNN {ratio:.2f}x"


def nanojoules(pj: float | None) -> str:
    return "—" if pj is None else count(pj / 1e3)


def correlation(r: float | None) -> str:
    return "—" if r is None else f"{r:.3f}"
