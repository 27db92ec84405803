"""A run's summary, typed, derived from its event log alone.

`summarize(events)` is the one place that turns events into figures: the CLI, the dashboard,
the run folder and `bsnn report` all call it, so they never disagree. It works on a partial log.
`Summary.to_dict()` is `summary.json`, key for key; readers use attributes (`summary.layers[0].
firing_rate`), while `summary["layers"][0]["firing_rate"]` keeps working for notebooks.
"""

from __future__ import annotations

import functools
import os
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from bsnn.diagnostics import add_agreement
from bsnn.energy import OpCosts, operations
from bsnn.events import (
    TERMINAL,
    BatchDone,
    Event,
    Failed,
    Finished,
    Phase,
    Resolved,
    RunWarning,
    SnnCalibration,
    Started,
    Thresholds,
)

E = TypeVar("E", bound=Event)
LAYER_INFO = ("name", "kind", "neurons", "binary", "threshold", "threshold_min", "threshold_max",
              "lam", "fan_out", "sources", "macs")


class FieldMapping(Mapping[str, Any]):
    """Read access by key, as to the JSON: `summary["layers"][0]["name"]` is what summary.json
    holds there (plain lists and dicts), `summary.layers[0].name` the typed value; a field that
    is None and `optional` is absent, as it is from the JSON."""

    optional: tuple[str, ...] = ()

    def _keys(self) -> list[str]:
        return [f.name for f in fields(self)  # type: ignore[arg-type]
                if not (f.name in self.optional and getattr(self, f.name) is None)]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._keys()}

    @functools.cached_property
    def _plain(self) -> dict[str, Any]:
        return self.to_dict()

    def __getitem__(self, key: str) -> Any:
        return self._plain[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys())

    def __len__(self) -> int:
        return len(self._keys())


@dataclass(frozen=True, eq=True)
class LayerSummary(FieldMapping):
    """One spiking layer: its thresholds (from the conversion), its figures (from the
    counters), its agreement with the ANN and its operations per image."""

    name: str
    kind: str | None = None
    neurons: int = 0
    binary: bool | None = None
    threshold: float | None = None
    threshold_min: float | None = None
    threshold_max: float | None = None
    lam: float | list[float] | None = None
    fan_out: float | None = None
    sources: Any = None
    macs: float | None = None
    firing_rate: float | None = None
    firing_rate_per_step: list[float] | None = None
    spikes_per_image: float | None = None
    synops_per_image: float | None = None
    ann_mean_activation: float | None = None
    ann_rate: float | None = None
    calibration_error: float | None = None  # spikes per step, before SNN calibration
    correlation: float | None = None
    clipped_share: float | None = None
    ann_macs_per_image: float | None = None
    snn_ops_per_image: float | None = None
    ann_energy_pj: float | None = None
    snn_energy_pj: float | None = None


@dataclass(frozen=True, eq=True)
class Summary(FieldMapping):
    """The run so far: what ran, how it ended, accuracy per step and per-layer figures."""

    optional = ("distributed", "error")

    run_id: str | None = None
    status: str = "interrupted"
    config: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    resolved: dict[str, Any] | None = None
    started_at: float | None = None
    images: int = 0
    images_total: int | None = None
    time_steps: int = 0
    ann_accuracy: float | None = None
    accuracy_per_step: list[float] = field(default_factory=list)
    final_accuracy: float | None = None
    best_accuracy: float | None = None
    first_step_within_1pt: int | None = None
    layers: tuple[LayerSummary, ...] = ()
    binary_layers: int = 0
    synops_per_image: float | None = None
    energy: dict[str, Any] = field(default_factory=dict)
    wall_time_s: float | None = None
    images_per_s: float | None = None
    phase: str | None = None
    warnings: list[str] = field(default_factory=list)
    distributed: dict[str, Any] | None = None  # torchrun: the group and each rank's images
    error: dict[str, str] | None = None  # a failed run: error, message, fix

    def to_dict(self) -> dict[str, Any]:
        """`summary.json`: every field, the layers as dicts; `distributed` and `error` only
        where the run has them."""
        return {k: [x.to_dict() for x in self.layers] if k == "layers" else getattr(self, k)
                for k in self._keys()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Summary:
        """A summary read back from `summary.json` (keys it does not know are dropped)."""
        names = {f.name for f in fields(cls)}
        layer_names = {f.name for f in fields(LayerSummary)}
        values = {k: v for k, v in data.items() if k in names}
        values["layers"] = tuple(LayerSummary(**{k: v for k, v in row.items()
                                                 if k in layer_names})
                                 for row in data.get("layers") or ())
        return cls(**values)

    @property
    def ended(self) -> bool:
        return self.status in ("finished", "failed", "cancelled")


def pid_alive(pid: int | None, host: str | None = None) -> bool:
    """Whether the process that wrote a run still lives (unknowable for another host: no)."""
    if not pid or (host and host != socket.gethostname()):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def first_step_within(acc: list[float], reference: float | None, points: float = 1.0) -> int | None:
    """The first step t (1-based) from which accuracy stays within `points` of the reference."""
    if reference is None or not acc:
        return None
    ok = [a >= reference - points / 100 for a in acc]
    for t in range(len(ok)):
        if all(ok[t:]):
            return t + 1
    return None


def _status(events: list[Event], started: Started | None) -> str:
    """The terminal event's type; without one, running while the writer lives."""
    terminal = next((e for e in reversed(events) if isinstance(e, TERMINAL)), None)
    if terminal is not None:
        return terminal.type
    alive = started is not None and pid_alive(started.pid, started.host)
    return "running" if alive else "interrupted"


def _layer_row(info: dict[str, Any], batch: BatchDone | None,
               corrected: dict[str, float]) -> dict[str, Any]:
    """One spiking layer's thresholds (from conversion) and figures (from the counters)."""
    name = info["name"]
    row: dict[str, Any] = {k: info.get(k) for k in LAYER_INFO}
    images = batch.images if batch else 0
    spikes = batch.spikes.get(name) if batch else None
    if batch and spikes is not None and images:
        total = sum(spikes)
        row["firing_rate"] = total / (info["neurons"] * images * len(spikes))
        row["firing_rate_per_step"] = [s / (info["neurons"] * images) for s in spikes]
        row["spikes_per_image"] = total / images
        row["synops_per_image"] = sum(batch.synops.get(name, [0.0])) / images
    act = batch.ann_activation.get(name) if batch else None
    row["ann_mean_activation"] = (act / (info["neurons"] * images)
                                  if act is not None and images else None)
    lam = info.get("lam_mean")
    row["ann_rate"] = (row["ann_mean_activation"] / lam
                       if row["ann_mean_activation"] is not None and lam else None)
    row["calibration_error"] = corrected.get(name)
    return row


def last(events: list[Event], cls: type[E]) -> E | None:
    """The latest event of type `cls`."""
    return next((e for e in reversed(events) if isinstance(e, cls)), None)


def _fields(event: Event) -> dict[str, Any]:
    """An event's own fields, without type, time and seq."""
    return {k: v for k, v in event.to_dict().items() if k not in ("type", "time", "seq")}


def _layers(events: list[Event], batch: BatchDone | None,
            config: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The per-layer rows with agreement and operations, and the energy totals."""
    thresholds = last(events, Thresholds)
    calibration = last(events, SnnCalibration)
    corrected = calibration.error_before if calibration else {}
    rows = [_layer_row(info, batch, corrected)
            for info in (thresholds.layers if thresholds else [])]
    add_agreement(rows, batch.agreement if batch else {})
    images = batch.images if batch else 0
    energy = operations(rows, batch.input_ops / images if batch and images else None,
                        config.get("encoding", "constant"), OpCosts.from_config(config))
    return rows, energy


def summarize(events: list[Event]) -> Summary:
    """The summary of a run so far (also of an interrupted one)."""
    started, batch = last(events, Started), last(events, BatchDone)
    finished, phase, resolved = last(events, Finished), last(events, Phase), last(events, Resolved)
    images = batch.images if batch else 0
    acc = [c / images for c in batch.correct_per_step] if batch and images else []
    ann_accuracy = batch.ann_correct / images if batch and images else None
    config = started.config if started else {}
    rows, energy = _layers(events, batch, config)
    elapsed = (finished.wall_time_s if finished else None) or (batch.elapsed_s if batch else None)
    status = _status(events, started)
    failed = last(events, Failed)
    distributed = None
    if started and started.distributed:  # torchrun: the group and each rank's share so far
        distributed = {**started.distributed, "images_per_rank": batch.ranks if batch else None}
    return Summary(
        run_id=started.run_id if started else None, status=status, config=config,
        device=started.device if started else None,
        versions=started.versions if started else {},
        resolved=_fields(resolved) if resolved else started.resolved if started else None,
        started_at=started.time if started else None, images=images,
        images_total=batch.images_total if batch else None,
        time_steps=int(config.get("time", 0)), ann_accuracy=ann_accuracy,
        accuracy_per_step=acc, final_accuracy=acc[-1] if acc else None,
        best_accuracy=max(acc) if acc else None,
        first_step_within_1pt=first_step_within(acc, ann_accuracy),
        layers=tuple(LayerSummary(**row) for row in rows),
        binary_layers=sum(bool(x.get("binary")) for x in rows[:-1]),
        synops_per_image=(sum(x.get("synops_per_image") or 0.0 for x in rows)
                          if batch else None),
        energy=energy, wall_time_s=elapsed,
        images_per_s=images / elapsed if elapsed else None,
        phase=phase.name if phase else None,
        warnings=[e.message for e in events if isinstance(e, RunWarning)],
        distributed=distributed,
        error=({"error": failed.error, "message": failed.message, "fix": failed.fix}
               if status == "failed" and failed else None))
