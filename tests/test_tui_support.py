"""Support for the dashboard tests (no tests here): a deterministic event stream shaped like
the runner's, a stand-in `run_engine` that writes it to a run folder as the engine does, and a
helper that waits for the app to reach a state.

The fakes serve where a test needs fixed numbers (snapshots) or exact control over timing;
the end-to-end tests use the real engine.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from textual.pilot import Pilot

from bsnn.config import RunConfig
from bsnn.errors import CheckpointError
from bsnn.events import BatchDone, Cancelled, Event, Failed, Phase, event_from_dict
from bsnn.runlog import EVENTS_FILE, EventLog
from bsnn_tui.feed import RunFeed

# Spiking layers as bsnn.conversion names them; the output layer (fc2, 10 neurons) does not spike.
LAYERS = (("conv1_1", 2048), ("conv1_2", 2048), ("conv2_1", 1024), ("conv2_2", 1024),
          ("fc1", 128))
OUTPUT = {"name": "fc2", "kind": "linear", "neurons": 10, "shape": [10], "binary": False,
          "threshold": None, "threshold_min": None, "threshold_max": None, "lam": None,
          "lam_mean": None, "fan_out": None, "sources": ["fc1"]}


def fake_events(run_dir: Path, *, steps: int = 16, batches: int = 4, batch: int = 16,
                channelwise: bool = False) -> list[Event]:
    """A complete, plausible run: accuracy climbs towards the ANN's, rates settle per layer."""
    config = RunConfig(model="bundled:digits-fp", dataset="digits", time=steps, batch_size=batch,
                       eval_size=batches * batch, job_dir=str(run_dir.parent), run_id=run_dir.name)
    t0 = 1_700_000_000.0
    events: list[dict[str, Any]] = [
        {"type": "started", "time": t0, "run_id": run_dir.name, "run_dir": str(run_dir),
         "config": config.to_dict(), "device": "cpu", "versions": {"bsnn": "0.1.0"},
         "pid": 0, "host": "fixture"},
        {"type": "phase", "time": t0, "name": "load_model", "message": "loading bundled:digits-fp"},
        {"type": "phase", "time": t0, "name": "threshold_calibration",
         "message": "99.7th percentile"},
        {"type": "thresholds", "time": t0 + 1, "percentile": 99.7,
         "granularity": "channel" if channelwise else "layer",
         "layers": [{"name": name, "kind": "conv" if name.startswith("conv") else "linear",
                     "neurons": n, "shape": [n], "binary": False, "threshold": 1.0 + i / 4,
                     "threshold_min": 0.5 + i / 8 if channelwise else 1.0 + i / 4,
                     "threshold_max": 2.0 + i / 4 if channelwise else 1.0 + i / 4,
                     "lam": 2.0 + i, "lam_mean": 2.0 + i, "fan_out": 288.0, "sources": []}
                    for i, (name, n) in enumerate(LAYERS)] + [OUTPUT]},
        {"type": "warning", "time": t0 + 1, "message": "conv2_2: 3 channels never fire"},
        {"type": "phase", "time": t0 + 1, "name": "simulate",
         "message": f"{batches * batch} images x {steps} steps on cpu"},
    ]
    for b in range(batches):
        images = (b + 1) * batch
        accuracy = [min(0.97, 0.1 + 0.87 * (1 - 0.6 ** (t + 1))) for t in range(steps)]
        spikes = {name: [images * n * (0.05 + 0.1 * i) * min(1.0, (t + 1) / (i + 2))
                         for t in range(steps)] for i, (name, n) in enumerate(LAYERS)}
        events.append({
            "type": "batch_done", "time": t0 + 2 + b, "batch": b, "images": images,
            "images_total": batches * batch,
            "correct_per_step": [round(a * images) for a in accuracy],
            "ann_correct": round(0.97 * images),
            "spikes": spikes,
            "synops": {name: [s * 288 for s in per_t] for name, per_t in spikes.items()},
            "ann_activation": {name: images * n * (0.3 + 0.2 * i)
                               for i, (name, n) in enumerate(LAYERS)},
            "elapsed_s": 0.5 * (b + 1),
        })
    events.append({"type": "finished", "time": t0 + 2 + batches, "images": batches * batch,
                   "wall_time_s": 0.5 * batches,
                   "final_accuracy": events[-1]["correct_per_step"][-1] / (batches * batch)})
    for seq, event in enumerate(events):
        event["seq"] = seq
    typed = [event_from_dict(event) for event in events]
    assert None not in typed, "a fake event does not fit its class"
    return typed  # type: ignore[return-value]


def write_run(run_dir: Path, events: list[Event]) -> Path:
    """A run folder holding `events` as its log."""
    log = EventLog(run_dir / EVENTS_FILE)
    for event in events:
        log(event)
    log.close()
    return run_dir


class FakeEngine:
    """Stands in for producers.run_engine: replays fake_events into the feed and the run folder,
    `delay_s` apart, honouring `cancel` between batches and refusing a missing model."""

    def __init__(self, delay_s: float = 0.0, batches: int = 4) -> None:
        self.delay_s = delay_s
        self.batches = batches
        self.calls = 0

    def __call__(self, config: RunConfig, feed: RunFeed, cancel: threading.Event) -> None:
        config.validate()
        self.calls += 1
        run_dir = Path(config.job_dir) / f"fake-{self.calls:02d}"
        events = fake_events(run_dir, steps=config.time, batches=self.batches)
        log = EventLog(run_dir / EVENTS_FILE)

        def send(event: Event) -> None:
            log(event)
            feed.append(event)

        try:
            for event in events:
                if isinstance(event, Phase) and event.name == "threshold_calibration" \
                        and not config.model.startswith("bundled:") \
                        and not Path(config.model).is_file():
                    error = CheckpointError(f"model file {config.model} not found",
                                            "check the path")
                    send(Failed(time=event.time, error="CheckpointError", message=error.message,
                                fix=error.fix, images=0))
                    raise error
                if isinstance(event, BatchDone):
                    time.sleep(self.delay_s)
                    if cancel.is_set():
                        send(Cancelled(time=event.time, images=event.images
                                       - event.images_total // self.batches))
                        return
                send(event)
        finally:
            log.close()


async def wait_for(pilot: Pilot[Any], condition: Callable[[], object], timeout: float = 60,
                   what: str = "condition") -> None:
    """Let the app run until `condition()` holds; fail the test after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.05)
