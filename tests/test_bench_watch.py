"""benchmarks/bench_watch.py's bookkeeping: which batches count as watched, which as not."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_watch",
                                                  ROOT / "benchmarks" / "bench_watch.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_batch_counts_for_the_state_it_ran_in_and_none_across_a_switch() -> None:
    switches = [(10.0, True), (13.0, False), (16.0, True)]
    run = [(9.0, 10.5, 8),  # began before the first switch: left out
           (10.5, 12.0, 8), (12.0, 12.9, 8),  # watched
           (12.9, 13.5, 8),  # across the switch to not watching: left out
           (13.5, 15.0, 8), (15.0, 16.0, 8),  # not watched (ends on the switch)
           (16.0, 17.0, 8)]  # watched again
    states = _bench().split(run, switches)
    rounded = {on: [(round(s, 6), n) for s, n in rows] for on, rows in states.items()}
    assert rounded == {True: [(1.5, 8), (0.9, 8), (1.0, 8)], False: [(1.5, 8), (1.0, 8)]}


def test_batches_are_read_from_the_log_without_the_first(tmp_path: Path) -> None:
    def batch(at: float, images: int) -> str:
        return json.dumps({"type": "batch_done", "time": at, "batch": 0, "images": images,
                           "images_total": 20, "correct_per_step": [0], "ann_correct": 0,
                           "spikes": {}, "synops": {}, "ann_activation": {}, "elapsed_s": at})

    lines = ['{"type":"phase","time":1.0,"name":"simulate","message":""}',
             batch(2.0, 8), batch(3.5, 16), batch(4.0, 20)]
    (tmp_path / "events.jsonl").write_text("\n".join(lines) + "\n")
    assert _bench().batches(tmp_path) == [(2.0, 3.5, 8), (3.5, 4.0, 4)]
