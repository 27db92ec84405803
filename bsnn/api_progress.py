"""`progress=True` of `bsnn.simulate` and `bsnn.convert`: a progress bar in a notebook or a
script, as one more event sink beside the caller's own `on_event`.

A tqdm bar where tqdm is installed, else plain lines on stderr (a batch line at most once a
second): tqdm is optional, and rich belongs to the CLI (tests/test_import_hygiene.py).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from bsnn.events import TERMINAL, BatchDone, Emit, Event, describe

LINE_EVERY_S = 1.0  # the plain printer's batch lines: at most one a second, and the last


def compose(*sinks: Emit | None) -> Emit | None:
    """One sink that hands each event to every sink given (None: none), in order."""
    chosen = [s for s in sinks if s is not None]
    if len(chosen) <= 1:
        return chosen[0] if chosen else None

    def emit(event: Event) -> None:
        for sink in chosen:
            sink(event)
    return emit


def progress_sink(stream: TextIO | None = None) -> Emit:
    """A tqdm bar over the simulated images (phases as lines above it) when tqdm is
    installed, else a LinePrinter; both write to `stream` (stderr)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return LinePrinter(stream)
    return TqdmBar(tqdm, stream)


def _accuracies(event: BatchDone) -> str:
    seen = max(event.images, 1)
    snn = event.correct_per_step[-1] / seen if event.correct_per_step else 0.0
    return f"SNN {100 * snn:.2f} %, ANN {100 * event.ann_correct / seen:.2f} %"


class LinePrinter:
    """Events in words (bsnn.events.describe), one line each; batches throttled."""

    def __init__(self, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.clock = stream, clock
        self.last = -LINE_EVERY_S

    def say(self, text: str) -> None:
        print(text, file=self.stream or sys.stderr, flush=True)

    def __call__(self, event: Event) -> None:
        if isinstance(event, BatchDone):
            now = self.clock()
            if now - self.last < LINE_EVERY_S and event.images < event.images_total:
                return
            self.last = now
            self.say(f"{describe(event)} ({_accuracies(event)})")
        else:
            self.say(describe(event))


class TqdmBar:
    """A tqdm bar over the simulated images, with the live accuracies; the other events as
    lines written above it (tqdm.write)."""

    def __init__(self, tqdm: Any, stream: TextIO | None = None) -> None:
        self.tqdm, self.stream = tqdm, stream
        self.bar: Any = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, BatchDone):
            if self.bar is None:
                self.bar = self.tqdm(total=event.images_total, desc="simulate", unit="img",
                                     file=self.stream or sys.stderr)
            self.bar.update(event.images - self.bar.n)
            self.bar.set_postfix_str(_accuracies(event), refresh=True)
            return
        if isinstance(event, TERMINAL) and self.bar is not None:
            self.bar.close()
            self.bar = None
        self.tqdm.write(describe(event), file=self.stream or sys.stderr)
