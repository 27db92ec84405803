"""A canvas of braille dots: each terminal cell holds 2 x 4 dots, so a line plot gets eight
times the resolution of the cells, drawn in a millisecond where a plotting library took ten."""

from __future__ import annotations

Row = list[tuple[str, str]]  # a line of cells as runs of (text, style), a style such as "cyan"

# The bit of each dot in a braille cell (U+2800 + bits), by [row][column] within the cell.
DOT_BITS = ((0x01, 0x08), (0x02, 0x10), (0x04, 0x20), (0x40, 0x80))
BLANK = 0x2800


class Canvas:
    """`width` x `height` cells of dots; a cell takes the colour of the last dot drawn in it."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.bits = [[0] * width for _ in range(height)]
        self.colours: list[list[str]] = [[""] * width for _ in range(height)]
        self.text: dict[tuple[int, int], tuple[str, str]] = {}  # (row, col): a character over dots

    @property
    def dots(self) -> tuple[int, int]:
        """Dots across and down."""
        return 2 * self.width, 4 * self.height

    def dot(self, x: int, y: int, colour: str) -> None:
        """Dot (x, y), from the top left; dots off the canvas are dropped."""
        if 0 <= x < 2 * self.width and 0 <= y < 4 * self.height:
            row, col = y // 4, x // 2
            self.bits[row][col] |= DOT_BITS[y % 4][x % 2]
            self.colours[row][col] = colour

    def line(self, start: tuple[int, int], end: tuple[int, int], colour: str) -> None:
        """The dots of a straight line, both ends included (Bresenham)."""
        (x, y), (x1, y1) = start, end
        dx, dy = abs(x1 - x), -abs(y1 - y)
        sx, sy = (1 if x < x1 else -1), (1 if y < y1 else -1)
        error = dx + dy
        while True:
            self.dot(x, y, colour)
            if (x, y) == (x1, y1):
                return
            twice = 2 * error
            if twice >= dy:
                error, x = error + dy, x + sx
            if twice <= dx:
                error, y = error + dx, y + sy

    def write(self, row: int, col: int, text: str, colour: str = "") -> None:
        """Characters over the dots from cell (row, col), cropped at the right edge."""
        for i, char in enumerate(text[:max(0, self.width - col)]):
            self.text[row, col + i] = char, colour

    def row(self, row: int) -> Row:
        """One row of cells, a run per colour."""
        runs: Row = []
        run, colour = "", ""
        for col in range(self.width):
            bits = self.bits[row][col]
            char, cell_colour = self.text.get((row, col)) or (
                chr(BLANK + bits) if bits else " ", self.colours[row][col])
            if cell_colour != colour and run:
                runs.append((run, colour))
                run = ""
            run, colour = run + char, cell_colour
        runs.append((run, colour))
        return runs
