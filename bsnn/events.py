"""The run's event stream: one dataclass per event type, and their JSON form; no file I/O.

One stream, many sinks: the dashboard, the CLI's progress, an API callback, and the run folder's
`events.jsonl` (bsnn.runlog). Serialised, each event is a flat JSON object with `type`, `time`
(unix seconds), `seq` and the fields of its class below; `parse_lines` gives the same classes
back. Counters in `BatchDone` are cumulative, so the last one alone describes the run so far: a
viewer that attaches late, or a log cut short by a crash, still has everything up to that
batch. Figures (accuracies, rates) are derived from events in one place only:
`bsnn.summary.summarize`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

# The phases of a run, in order; `snn_calibration` only with --snn-calibration.
PHASES = ("load_model", "load_data", "threshold_calibration", "snn_calibration", "simulate")


@dataclass(kw_only=True)
class Event:
    """Fields every event has; `seq` is set by the log writer."""

    type: ClassVar[str] = ""
    time: float = field(default_factory=time.time)
    seq: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **{f.name: getattr(self, f.name) for f in fields(self)}}


@dataclass(kw_only=True)
class Started(Event):
    """The run has a folder and a device; `config` is the validated RunConfig as a dict."""

    type: ClassVar[str] = "started"
    run_id: str
    run_dir: str
    config: dict[str, Any]
    device: str
    versions: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    host: str | None = None
    distributed: dict[str, Any] | None = None  # torchrun: world_size and backend
    # The Python API has loaded everything before it starts: its Resolved record's fields ride
    # here instead of in an event of their own (a CLI run sends a Resolved event after loading)
    resolved: dict[str, Any] | None = None


@dataclass(kw_only=True)
class Phase(Event):
    """A phase (one of PHASES) begins."""

    type: ClassVar[str] = "phase"
    name: str
    message: str = ""


@dataclass(kw_only=True)
class Progress(Event):
    """How far a long phase has got, a few times per phase (never per image), so a watcher is
    not left in front of a silent terminal: `done` of `total` units (threshold calibration:
    layers whose percentile is exact, after each pass over the calibration images)."""

    type: ClassVar[str] = "progress"
    phase: str
    done: int
    total: int
    message: str = ""


@dataclass(kw_only=True)
class Resolved(Event):
    """What the run actually used, resolved once the model and data are loaded: the values
    every record shows (summary, exports, `bsnn runs`, the dashboard). `origin` says, per
    field, where a value came from when it is not what the user typed (e.g. "arch": "from
    checkpoint", "device": "auto"); None fields are unknown (data given to the API in memory)."""

    type: ClassVar[str] = "resolved"
    model: str  # as given: a path, bundled:NAME, or the class of an in-memory module
    checkpoint: str | None  # the file read, absolute
    checkpoint_sha256: str | None
    arch: str | None
    width: float | None
    binary: bool | None
    num_classes: int | None
    dataset: str | None
    data_path: str | None  # the folder read; "sklearn:load_digits" for the bundled digits
    input_shape: list[int] | None  # C, H, W as the model sees the images
    mean: list[float] | None
    std: list[float] | None
    device: str
    device_name: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    origin: dict[str, str] = field(default_factory=dict)


@dataclass(kw_only=True)
class RunWarning(Event):
    """Something the user should know that does not stop the run."""

    type: ClassVar[str] = "warning"
    message: str


@dataclass(kw_only=True)
class Thresholds(Event):
    """The converted network: one dict per spiking layer (SpikingNetwork.describe())."""

    type: ClassVar[str] = "thresholds"
    layers: list[dict[str, Any]]
    percentile: float
    granularity: str


@dataclass(kw_only=True)
class SnnCalibration(Event):
    """Li et al.'s SNN calibration was applied; the mean error per layer before it."""

    type: ClassVar[str] = "snn_calibration"
    mode: str
    images: int
    error_before: dict[str, float]


@dataclass(kw_only=True)
class BatchDone(Event):
    """Cumulative counters after a batch: correct per step, per-layer spikes and synaptic
    operations per step, summed ANN activations, ANN-vs-SNN running sums (and, once the last
    image is in, their histograms); `ranks`: images per torchrun rank."""

    type: ClassVar[str] = "batch_done"
    batch: int
    images: int
    images_total: int
    correct_per_step: list[int]
    ann_correct: int
    spikes: dict[str, list[float]]
    synops: dict[str, list[float]]
    ann_activation: dict[str, float]
    elapsed_s: float
    ranks: list[int] | None = None
    agreement: dict[str, list[float]] = field(default_factory=dict)  # bsnn.diagnostics.SUMS
    agreement_histogram: dict[str, list[float]] | None = None  # the last event of a run only
    input_ops: float = 0.0  # Poisson input: expected accumulates in the first layer


@dataclass(kw_only=True)
class Finished(Event):
    type: ClassVar[str] = "finished"
    images: int
    wall_time_s: float | None
    final_accuracy: float | None


@dataclass(kw_only=True)
class Failed(Event):
    """`error` is the exception's class name; `message` and `fix` are for the user."""

    type: ClassVar[str] = "failed"
    error: str
    message: str
    fix: str = ""
    images: int = 0


@dataclass(kw_only=True)
class Cancelled(Event):
    type: ClassVar[str] = "cancelled"
    images: int


EVENT_TYPES: dict[str, type[Event]] = {cls.type: cls for cls in (
    Started, Phase, Progress, Resolved, RunWarning, Thresholds, SnnCalibration, BatchDone,
    Finished, Failed, Cancelled)}
TERMINAL = (Finished, Failed, Cancelled)
Emit = Callable[[Event], None]


def event_from_dict(data: Any) -> Event | None:
    """The event a JSON object describes; None for an unknown type or missing fields (a line
    from another version, or a foreign file)."""
    if not isinstance(data, dict):
        return None
    cls = EVENT_TYPES.get(data.get("type"))  # type: ignore[arg-type]
    if cls is None:
        return None
    names = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError:
        return None


def keep(events: list[Event], event: Event) -> None:
    """Append `event` to a run's list; a BatchDone replaces the previous one (its counters are
    cumulative), so the list a consumer keeps for `summarize` stays small in a long run."""
    if isinstance(event, BatchDone) and events and isinstance(events[-1], BatchDone):
        events[-1] = event
    else:
        events.append(event)


def describe(event: Event) -> str:
    """The event in words, for the CLI, the detached engine's log and the dashboard's log."""
    match event:
        case Started():
            where = f" in {event.run_dir}" if event.run_dir else ""  # the API writes none
            return f"started run {event.run_id} on {event.device}{where}"
        case Phase():
            return f"{event.name}: {event.message}"
        case Progress():
            return f"{event.phase}: {event.message or f'{event.done} of {event.total}'}"
        case Resolved():
            return f"resolved: {resolved_in_words(event)}"
        case RunWarning():
            return f"warning: {event.message}"
        case Thresholds():
            return (f"thresholds for {len(event.layers)} layers (p={event.percentile}, "
                    f"per {event.granularity})")
        case SnnCalibration():
            return f"snn_calibration: {event.mode} correction from {event.images} images"
        case BatchDone():
            return f"batch {event.batch}: {event.images} of {event.images_total} images"
        case Finished():
            acc = "—" if event.final_accuracy is None else f"{100 * event.final_accuracy:.2f} %"
            return f"finished: {event.images} images, accuracy at T {acc}"
        case Failed():
            return f"failed: {event.message}" + (f" — {event.fix}" if event.fix else "")
        case Cancelled():
            return f"cancelled after {event.images} images"
    return event.type


def resolved_in_words(r: Resolved) -> str:
    """The resolved record on one line: model, arch, data, device and checkpoint."""
    def said(name: str) -> str:
        return f" ({r.origin[name]})" if name in r.origin else ""

    width = "" if r.width in (None, 1.0) else f" x{r.width:g}"
    kind = " binary" if r.binary else ""
    shape = "x".join(map(str, r.input_shape)) if r.input_shape else "?"
    sha = f", sha256 {r.checkpoint_sha256[:12]}" if r.checkpoint_sha256 else ""
    return (f"{r.arch}{width}{kind}{said('arch')} on {r.dataset}{said('dataset')} from "
            f"{r.data_path}{said('data_path')}, images {shape}, mean {r.mean} std {r.std}"
            f"{said('stats')}, device {r.device}{said('device')}{sha}")


def parse_lines(lines: list[str]) -> list[Event]:
    """Events from JSON lines; a torn or corrupt line (a crash mid-write) is skipped."""
    events = []
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            event = event_from_dict(json.loads(line))
        except json.JSONDecodeError:
            continue
        if event is not None:
            events.append(event)
    return events
