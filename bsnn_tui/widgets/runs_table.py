"""The runs screen's table: a run a row, its columns fitted to the table's width.

DataTable makes each column as wide as its widest cell and lets the table run past the edge,
where the last column shows as a stub (a model as `bund`, a data set as `di`) that reads as a
value. Here the run's name, its status and its figures are always shown whole; the text columns
after them are shown whole while they fit, the first that does not is shortened with …, and
the rest are left out (the plot's subtitle names what ran for the highlighted run).
"""

from __future__ import annotations

from typing import NamedTuple

from rich.text import Text
from textual import events
from textual.widgets import DataTable

PADDING = 2  # DataTable's cell padding, both sides together
SHORTEST = 8  # a text column given less room than this is left out rather than shortened


class Column(NamedTuple):
    label: str
    key: str
    cap: int  # the most cells its values get
    kept: bool  # the run's name, its status and its figures: shown at any width


COLUMNS = (
    Column("", "mark", 1, True), Column("run", "run", 24, True),
    Column("status", "status", 11, True), Column("acc@T", "acc", 7, True),
    Column("ANN", "ann", 7, True), Column("T", "T", 5, True), Column("p", "p", 6, True),
    Column("images", "images", 13, True), Column("model", "model", 28, False),
    Column("data set", "dataset", 11, False), Column("arch", "arch", 22, False),
    Column("device", "device", 12, False),
)
Plan = tuple[tuple[Column, int], ...]  # the columns shown, each with its width
Cells = dict[str, Text]  # a run's cell in every column, by the column's key


def fit_columns(needed: dict[str, int], available: int) -> Plan:
    """Kept columns as wide as their widest value (up to their cap); then the others in
    order while there is room, the first that does not fit whole shortened to the room left
    when that is at least SHORTEST, and none after it."""
    full = {c.key: min(c.cap, max(len(c.label), needed.get(c.key, 0))) for c in COLUMNS}
    room = available - sum(full[c.key] + PADDING for c in COLUMNS if c.kept)
    shown = set()
    for column in COLUMNS:
        if column.kept:
            continue
        width = min(full[column.key], room - PADDING)
        if width < min(SHORTEST, full[column.key]):
            break
        full[column.key] = width
        shown.add(column.key)
        room -= width + PADDING
    return tuple((c, full[c.key]) for c in COLUMNS if c.kept or c.key in shown)


def cell(value: str, style: str = "") -> Text:
    """A cell that ends in … where its column is narrower (Text, not str: a name with
    [brackets] is not read as markup)."""
    return Text(value, style=style, no_wrap=True, overflow="ellipsis", end="")


class RunsTable(DataTable[Text]):
    """Rows are added as Cells keyed by run folder; the table keeps them all, so it can lay
    itself out again when its width, or the widest value, calls for other columns."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._rows: dict[str, Cells] = {}
        self._needed: dict[str, int] = {}
        self.plan: Plan = ()

    def start_over(self) -> None:
        """Empty, for a new listing: the widths it needs are measured again."""
        self.clear()
        self._rows.clear()
        self._needed.clear()

    def add_runs(self, rows: list[tuple[str, Cells]]) -> None:
        """Append rows; the columns are fitted again only when a value is wider than before."""
        for key, cells in rows:
            self._rows[key] = cells
            for column, text in cells.items():
                self._needed[column] = max(self._needed.get(column, 0), text.cell_len)
        if not self.refit():
            for key, cells in rows:
                self.add_row(*self.shown(cells), key=key)

    def set_cell(self, key: str, column: str, text: Text) -> None:
        self._rows[key][column] = text
        if any(c.key == column for c, _ in self.plan):
            self.update_cell(key, column, text)

    def shown(self, cells: Cells) -> list[Text]:
        return [cells[column.key] for column, _ in self.plan]

    def available(self) -> int:
        """The width for cells, the vertical scrollbar's kept free: the columns do not change
        when it appears."""
        return self.size.width - self.styles.scrollbar_size_vertical

    def refit(self) -> bool:
        """Build the table again (every row) if the columns that fit have changed; True if
        it did."""
        plan = fit_columns(self._needed, self.available())
        if plan == self.plan:
            return False
        self.plan, row = plan, self.cursor_row
        self.clear(columns=True)
        for column, width in plan:
            self.add_column(column.label, key=column.key, width=width)
        for key, cells in self._rows.items():
            self.add_row(*self.shown(cells), key=key)
        if self._rows and row >= 0:
            self.move_cursor(row=min(row, len(self._rows) - 1))
        return True

    def on_resize(self, event: events.Resize) -> None:
        self.refit()
