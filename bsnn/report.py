"""A run's summary, derived from its event log alone, and the export files.

`summarize(events)` is the one place that turns events into figures: the CLI, the dashboard, the
run folder and `bsnn report` all call it, so they never disagree. Works on a partial log.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from bsnn.diagnostics import add_agreement, agreement_figure
from bsnn.energy import OpCosts, operations
from bsnn.errors import RunStorageError
from bsnn.events import (
    EVENTS_FILE,
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
    read_events,
)

E = TypeVar("E", bound=Event)

LAYER_INFO = ("name", "kind", "neurons", "binary", "threshold", "threshold_min", "threshold_max",
              "lam", "fan_out", "sources", "macs")
EXPORT_FILES = ("summary.json", "per_timestep.csv", "layers.csv", "summary.md", "accuracy.png",
                "agreement.png")


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
    else:
        row.update(firing_rate=None, firing_rate_per_step=None, spikes_per_image=None,
                   synops_per_image=None)
    act = batch.ann_activation.get(name) if batch else None
    row["ann_mean_activation"] = (act / (info["neurons"] * images)
                                  if act is not None and images else None)
    lam = info.get("lam_mean")
    row["ann_rate"] = (row["ann_mean_activation"] / lam
                       if row["ann_mean_activation"] is not None and lam else None)
    row["calibration_error"] = corrected.get(name)  # spikes per step, before SNN calibration
    return row


def _last(events: list[Event], cls: type[E]) -> E | None:
    return next((e for e in reversed(events) if isinstance(e, cls)), None)


def _fields(event: Event) -> dict[str, Any]:
    """An event's own fields, without type, time and seq."""
    return {k: v for k, v in event.to_dict().items() if k not in ("type", "time", "seq")}


def summarize(events: list[Event]) -> dict[str, Any]:
    """The summary of a run so far (also of an interrupted one)."""
    started = _last(events, Started)
    batch = _last(events, BatchDone)
    thresholds = _last(events, Thresholds)
    calibration = _last(events, SnnCalibration)
    finished = _last(events, Finished)
    phase = _last(events, Phase)
    resolved = _last(events, Resolved)
    images = batch.images if batch else 0
    acc = [c / images for c in batch.correct_per_step] if batch and images else []
    ann_accuracy = batch.ann_correct / images if batch and images else None
    corrected = calibration.error_before if calibration else {}
    layers = [_layer_row(info, batch, corrected)
              for info in (thresholds.layers if thresholds else [])]
    config = started.config if started else {}
    add_agreement(layers, batch.agreement if batch else {})
    energy = operations(layers, batch.input_ops / images if batch and images else None,
                        config.get("encoding", "constant"), OpCosts.from_config(config))
    elapsed = (finished.wall_time_s if finished else None) or (batch.elapsed_s if batch else None)
    summary: dict[str, Any] = {
        "run_id": started.run_id if started else None,
        "status": _status(events, started),
        "config": config,
        "device": started.device if started else None,
        "versions": started.versions if started else {},
        "resolved": _fields(resolved) if resolved else started.resolved if started else None,
        "started_at": started.time if started else None,
        "images": images,
        "images_total": batch.images_total if batch else None,
        "time_steps": int(config.get("time", 0)),
        "ann_accuracy": ann_accuracy,
        "accuracy_per_step": acc,
        "final_accuracy": acc[-1] if acc else None,
        "best_accuracy": max(acc) if acc else None,
        "first_step_within_1pt": first_step_within(acc, ann_accuracy),
        "layers": layers,
        "binary_layers": sum(bool(x.get("binary")) for x in layers[:-1]),
        "synops_per_image": (sum(x["synops_per_image"] or 0.0 for x in layers)
                             if batch else None),
        "energy": energy,
        "wall_time_s": elapsed,
        "images_per_s": images / elapsed if elapsed else None,
        "phase": phase.name if phase else None,
        "warnings": [e.message for e in events if isinstance(e, RunWarning)],
    }
    if started and started.distributed:  # torchrun: the group and each rank's share so far
        summary["distributed"] = {**started.distributed,
                                  "images_per_rank": batch.ranks if batch else None}
    failed = _last(events, Failed)
    if summary["status"] == "failed" and failed:
        summary["error"] = {"error": failed.error, "message": failed.message, "fix": failed.fix}
    return summary


def _atomic_write(path: Path, write: Callable[[Any], object]) -> None:
    """`write(file)` into a temp file, then rename, so a reader never sees half a file; on an
    error (a full disk) the temp file is removed and the old file, if any, kept."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def run_record(summary: dict[str, Any]) -> dict[str, Any]:
    """What the run used, as every record shows it: its `resolved` event where it got that far,
    else what was typed (a run that failed while loading, or one from an older bsnn), with
    `origin` saying so. The one place records read these values from."""
    c = summary["config"]
    r = summary.get("resolved") or {
        "model": c.get("model"), "arch": c.get("arch"), "width": c.get("width"),
        "dataset": c.get("dataset"), "data_path": c.get("data"), "device": summary["device"],
        "versions": summary["versions"], "origin": {"all": "as typed: the run did not get to "
                                                    "resolve the model and data"}}
    return {**r, "time_steps": c.get("time"), "percentile": c.get("percentile")}


def model_name(model: Any) -> str:
    """A model as a title names it: bundled:NAME as it is, a path by its file name."""
    text = str(model or "?")
    return text if text.startswith("bundled:") or "/" not in text else Path(text).name


def arch_text(r: dict[str, Any]) -> str:
    """vgg6ab, vgg15ab x0.25, binary when it is: the arch as the run built it."""
    width = r.get("width")
    return " ".join(filter(None, [r.get("arch") or "arch not recorded",
                                  f"x{width:g}" if width not in (None, 1, 1.0) else "",
                                  "binary" if r.get("binary") else ""]))


def run_title(summary: dict[str, Any]) -> str:
    """Model, arch, data set, T and percentile: the title of a run's plot and report."""
    r = run_record(summary)
    return (f"{model_name(r['model'])} ({arch_text(r)}) on {r.get('dataset') or '?'}, "
            f"T={r['time_steps']}, p={r['percentile']}")


RECORD_COLUMNS = ("run_id", "model", "arch", "width", "dataset", "data_path", "image_size",
                  "mean", "std", "device", "checkpoint_sha256", "bsnn", "torch", "T",
                  "percentile")


def record_cells(summary: dict[str, Any]) -> list[str]:
    """RECORD_COLUMNS' values: the CSV exports repeat them on every row, so a CSV read away
    from its run folder (or concatenated with others) still says what ran."""
    r = run_record(summary)
    shape = r.get("input_shape")
    values = [summary["run_id"], r["model"], r.get("arch"), r.get("width"), r.get("dataset"),
              r.get("data_path"), "x".join(map(str, shape)) if shape else None,
              _floats(r.get("mean")), _floats(r.get("std")), r.get("device"),
              r.get("checkpoint_sha256"), r["versions"].get("bsnn"), r["versions"].get("torch"),
              r["time_steps"], r["percentile"]]
    return ["" if v is None else str(v) for v in values]


def _floats(values: list[float] | None) -> str | None:
    return None if values is None else " ".join(f"{v:.6g}" for v in values)


def per_timestep_csv(summary: dict[str, Any]) -> str:
    """t, accuracy, each layer's firing rate at t, then the run's record (RECORD_COLUMNS)."""
    out = io.StringIO()
    w = csv.writer(out)
    names = [layer["name"] for layer in summary["layers"] if layer["firing_rate_per_step"]]
    w.writerow(["t", "accuracy", *[f"rate_{n}" for n in names], *RECORD_COLUMNS])
    rates = {layer["name"]: layer["firing_rate_per_step"] for layer in summary["layers"]}
    record = record_cells(summary)
    for t, a in enumerate(summary["accuracy_per_step"]):
        w.writerow([t + 1, f"{a:.6f}", *[f"{rates[n][t]:.6f}" for n in names], *record])
    return out.getvalue()


LAYER_COLUMNS = ("name", "kind", "neurons", "binary", "threshold", "threshold_min",
                 "threshold_max", "lam", "firing_rate", "ann_rate", "ann_mean_activation",
                 "spikes_per_image", "synops_per_image", "macs", "ann_macs_per_image",
                 "snn_ops_per_image", "ann_energy_pj", "snn_energy_pj", "correlation",
                 "clipped_share")


def layers_csv(summary: dict[str, Any]) -> str:
    """One row per spiking layer (LAYER_COLUMNS), then the run's record (RECORD_COLUMNS)."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([*LAYER_COLUMNS, *RECORD_COLUMNS])
    record = record_cells(summary)
    for layer in summary["layers"]:
        w.writerow(["" if layer.get(c) is None else layer.get(c) for c in LAYER_COLUMNS]
                   + record)
    return out.getvalue()


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def _group(summary: dict[str, Any]) -> str:
    group = summary.get("distributed")
    return f" x {group['world_size']} processes ({group['backend']})" if group else ""


def weights_in_words(summary: dict[str, Any]) -> str:
    """Whether the converted network has binary layers, and how their weights were used."""
    binary, spiking = summary["binary_layers"], max(0, len(summary["layers"]) - 1)
    if not binary:
        return "full-precision weights"
    mode = summary["config"].get("binary_weights")
    return f"binary weights in {binary} of {spiking} spiking layers (--binary-weights {mode})"


def record_markdown(summary: dict[str, Any]) -> list[str]:
    """The resolved record as Markdown list items, each value with where it came from when the
    user did not type it as it is."""
    r = run_record(summary)
    origin = r.get("origin") or {}

    def said(*names: str) -> str:
        words = dict.fromkeys(origin[n] for n in names if n in origin)  # each phrase once
        return "".join(f" ({w})" for w in words)

    sha = r.get("checkpoint_sha256")
    shape = r.get("input_shape")
    device = r.get("device") or "?"
    lines = [f"- model: `{r['model']}`"
             + (f" = `{r['checkpoint']}`" if r.get("checkpoint") else "")
             + (f", sha256 `{sha}`" if sha else "") + said("all"),
             f"- arch: {arch_text(r)}{said('arch', 'width')}, "
             f"{r.get('num_classes') or '?'} classes",
             f"- data set: {r.get('dataset') or '?'}{said('dataset')}, read from "
             f"`{r.get('data_path') or '?'}`{said('data_path')}",
             f"- images: {'x'.join(map(str, shape)) if shape else '?'}, normalised with mean "
             f"{r.get('mean') or '?'} and std {r.get('std') or '?'}{said('stats')}",
             f"- device: {device}" + (f" ({r['device_name']})" if r.get("device_name") else "")
             + said("device")]
    versions = r.get("versions") or {}
    if versions:
        lines.append("- versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return lines


def summary_markdown(summary: dict[str, Any]) -> str:
    """A short human report for a lab notebook."""
    c = summary["config"]
    acc = summary["accuracy_per_step"]
    lines = [
        f"# {run_title(summary)}",
        "",
        f"bsnn run `{summary['run_id']}` — {summary['status']}",
        "",
        *record_markdown(summary),
        f"- {weights_in_words(summary)}",
        f"- percentile {c.get('percentile')}, norm {c.get('norm')}, T = {c.get('time')}, "
        f"propagation {c.get('propagation')}, reset {c.get('reset')}, v0 {c.get('v0')}, "
        f"thresholds per {c.get('threshold_granularity')}",
        f"- images: {summary['images']} of {summary['images_total']}{_group(summary)}, "
        f"wall time {summary['wall_time_s'] or 0:.1f} s",
        f"- ANN accuracy (same images): {_pct(summary['ann_accuracy'])}",
        f"- SNN accuracy at T: {_pct(summary['final_accuracy'])} (best "
        f"{_pct(summary['best_accuracy'])}); within 1 point of the ANN from step "
        f"{summary['first_step_within_1pt'] or '—'}",
        "",
        "| t | accuracy |",
        "|---|---|",
    ]
    marks = sorted({t for t in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if t <= len(acc)}
                   | ({len(acc)} if acc else set()))
    lines += [f"| {t} | {_pct(acc[t - 1])} |" for t in marks]
    lines += ["", "| layer | neurons | threshold | firing rate | ANN rate | synops / image |",
              "|---|---|---|---|---|---|"]
    for layer in summary["layers"]:
        th = layer["threshold"]
        th_text = "—" if th is None else f"{th:.4g}"
        rate = layer["firing_rate"]
        ann = layer["ann_rate"]
        syn = layer["synops_per_image"]
        lines.append(
            f"| {layer['name']} | {layer['neurons']} | {th_text} | "
            f"{'—' if rate is None else f'{rate:.4f}'} | {'—' if ann is None else f'{ann:.4f}'} "
            f"| {'—' if syn is None else f'{syn:,.0f}'} |"
        )
    lines += operations_markdown(summary)
    if summary.get("error"):
        lines += ["", f"**Failed:** {summary['error']['message']} — {summary['error']['fix']}"]
    return "\n".join(lines) + "\n"


def _num(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def operations_markdown(summary: dict[str, Any]) -> list[str]:
    """Operations and energy per image (docs/operations.md), and how closely each spiking
    layer's rates follow its ANN activations."""
    e = summary.get("energy") or {}
    costs = e.get("costs_pj", {})
    lines = ["", f"Operations and energy per image (pJ per MAC {costs.get('mac')}, per "
             f"accumulate {costs.get('ac')}, per binary op {costs.get('binary')}); r: "
             "correlation of ANN activation / lambda and SNN rate; clipped: activations "
             "above lambda", "",
             "| layer | ANN MACs | SNN ops | ANN nJ | SNN nJ | r | clipped % |",
             "|---|---|---|---|---|---|---|"]
    for layer in summary["layers"]:
        nj = [None if v is None else v / 1e3 for v in (layer.get("ann_energy_pj"),
                                                        layer.get("snn_energy_pj"))]
        clipped = layer.get("clipped_share")
        lines.append(
            f"| {layer['name']} | {_num(layer.get('ann_macs_per_image'), ',.0f')} | "
            f"{_num(layer.get('snn_ops_per_image'), ',.0f')} | {_num(nj[0], ',.1f')} | "
            f"{_num(nj[1], ',.1f')} | {_num(layer.get('correlation'), '.3f')} | "
            f"{_num(None if clipped is None else 100 * clipped, '.2f')} |")
    ann, snn = e.get("ann_energy_pj"), e.get("snn_energy_pj")
    lines.append(f"| total | {_num(e.get('ann_macs_per_image'), ',.0f')} | "
                 f"{_num(e.get('snn_ops_per_image'), ',.0f')} | "
                 f"{_num(None if ann is None else ann / 1e3, ',.1f')} | "
                 f"{_num(None if snn is None else snn / 1e3, ',.1f')} | | |")
    lines += ["", f"ANN / SNN energy: {_num(e.get('energy_ratio'), '.2f')}"]
    return lines


def accuracy_png(summary: dict[str, Any], path: Path) -> None:
    """Accuracy vs time step with the ANN's accuracy as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    acc = summary["accuracy_per_step"]
    ax.plot(range(1, len(acc) + 1), [100 * a for a in acc], label="SNN")
    if summary["ann_accuracy"] is not None:
        ax.axhline(100 * summary["ann_accuracy"], color="grey", ls="--", label="ANN")
    ax.set_title(run_title(summary), fontsize=9)
    ax.set_xlabel("time step")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    try:
        _atomic_write(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)


def agreement_png(summary: dict[str, Any], histograms: dict[str, list[float]],
                  path: Path) -> None:
    """Per layer, ANN activation / lambda against SNN rate (bsnn.diagnostics)."""
    from matplotlib import pyplot as plt

    fig = agreement_figure(histograms, run_title(summary))
    try:
        _atomic_write(path, lambda f: fig.savefig(f, format="png"))
    finally:
        plt.close(fig)


def _export_writers(summary: dict[str, Any], histograms: dict[str, list[float]] | None,
                    ) -> dict[str, Callable[[Path], None]]:
    """Each export file's name and how to write it; `agreement.png` needs the histograms of a
    run whose every image was simulated by the engine."""
    def data(text: str) -> Callable[[Path], None]:
        return lambda path: _atomic_write(path, lambda f: f.write(text.encode()))

    writers = {
        "summary.json": data(json.dumps(summary, indent=2)),
        "per_timestep.csv": data(per_timestep_csv(summary)),
        "layers.csv": data(layers_csv(summary)),
        "summary.md": data(summary_markdown(summary)),
    }
    if summary["accuracy_per_step"]:
        writers["accuracy.png"] = lambda path: accuracy_png(summary, path)
    if histograms and any(sum(h) for h in histograms.values()):
        writers["agreement.png"] = lambda path: agreement_png(summary, histograms, path)
    return writers


def write_exports(run_dir: str | os.PathLike[str],
                  events: list[Event] | None = None) -> list[Path]:
    """Write every export file it can into the run folder from its events; return their paths.

    A file that cannot be written (full disk, permissions) does not stop the others: they are
    all tried, then one RunStorageError names the missing ones and how to get them back.
    """
    run_dir = Path(run_dir)
    if events is None:
        events = read_events(run_dir / EVENTS_FILE)
    paths, missing, reason = [], [], ""
    batch = _last(events, BatchDone)
    histograms = batch.agreement_histogram if batch else None
    for name, write in _export_writers(summarize(events), histograms).items():
        try:
            write(run_dir / name)
            paths.append(run_dir / name)
        except OSError as e:
            missing.append(name)
            reason = reason or e.strerror or str(e)
    if missing:
        raise RunStorageError(f"could not write {', '.join(missing)} in {run_dir}: {reason}",
                              f"free disk space (or fix the folder's permissions), then run "
                              f"`bsnn report {run_dir}` to write them")
    return paths


def _attempt(*writes: Callable[[], object] | None) -> RunStorageError | None:
    """Run every write, even after one failed; their failures as one error."""
    errors = []
    for write in writes:
        try:
            if write is not None:
                write()
        except RunStorageError as e:
            errors.append(e)
    if len(errors) < 2:
        return errors[0] if errors else None
    return RunStorageError("; ".join(e.message for e in errors),
                           "; ".join(e.fix for e in errors))


def end_run(run_dir: Path, events: list[Event], last: Event, send: Callable[[Event], None],
            before: Callable[[], object] | None = None) -> RunStorageError | None:
    """Write a run's files (`before`, then the exports) as they read with `last`, its terminal
    event, and only then `send` (keep, log and emit) it: whoever sees the run end finds its
    files. A write that fails turns a finished or cancelled run into a failed one naming what is
    missing: that error is returned for the caller to raise. A run failing already keeps its
    own error, with a warning before it naming the missing files."""
    error = _attempt(before, lambda: write_exports(run_dir, [*events, last]))
    if error is not None and isinstance(last, Failed):
        _attempt(lambda: send(RunWarning(message=str(error))))
        error = None
    if error is None:
        error = _attempt(lambda: send(last))
        if error is None or isinstance(last, Failed):
            return None
    failed = Failed(error=type(error).__name__, message=error.message, fix=error.fix,
                    images=int(getattr(last, "images", 0)))
    _attempt(lambda: write_exports(run_dir, [*events, failed]), lambda: send(failed))
    return error
