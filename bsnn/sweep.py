"""A grid of runs (models x percentiles x switch combinations) and their comparison table.

Every cell is an ordinary run (its own run folder and events), so the dashboard's runs screen
can open and overlay any of them; the sweep adds its record `sweep-<id>.json`
(bsnn.sweep_record) and the table `sweep-<id>.csv`, `.md` and `.png` to the job dir. The cells
run here one after another (`run_inline`), or fan out to processes or a Slurm cluster
(bsnn.sweep_launch). A variant is a named set of switches, e.g. "v0=half,snn_calibration=bias":
the run options marked `switch` in bsnn.options, whose types and checks apply to the values.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bsnn.config import RunConfig
from bsnn.errors import BsnnError, ConfigError, RunStorageError
from bsnn.events import Emit
from bsnn.options import OPTION, OPTIONS
from bsnn.records import arch_text, run_record
from bsnn.summary import Summary

if TYPE_CHECKING:
    from bsnn.sweep_record import Collected, SweepRecord

REPORT_STEPS = (4, 8, 16, 32, 64, 128)
SWITCHES = tuple(o.name for o in OPTIONS if o.switch)
SAME_STEP = "propagation=same-step"  # the latency switches are measured with --one-step
PRESETS: dict[str, str] = {  # name -> switches
    "original": "propagation=delayed",  # the original's conversion, its default timing
    "one-step": SAME_STEP,  # the original's conversion with --one-step
    "v0-half": f"{SAME_STEP},v0=half",
    "channel": f"{SAME_STEP},threshold_granularity=channel",
    "bias-cal": f"{SAME_STEP},snn_calibration=bias",
    "potential-cal": f"{SAME_STEP},snn_calibration=potential",
    "readout-2": f"{SAME_STEP},readout_delay=2",
    "reset-zero": f"{SAME_STEP},reset=zero",
    "best": f"{SAME_STEP},v0=half,snn_calibration=bias",
}


@dataclass(frozen=True)
class Variant:
    name: str
    switches: dict[str, Any]


def parse_variant(text: str) -> Variant:
    """A preset name, or `[NAME:]key=value,key=value` over the switches above; each value is
    converted and checked by its option (a whole-config check, e.g. readout delay < T, waits
    for the grid's configs)."""
    if text in PRESETS:
        name, body = text, PRESETS[text]
    else:
        name, _, body = text.rpartition(":") if ":" in text else (text, "", text)
    switches: dict[str, Any] = {}
    for item in filter(None, body.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in SWITCHES:
            raise ConfigError(f"variant {text!r}: {item!r} is not a switch",
                              f"use a preset ({', '.join(PRESETS)}) or key=value with key one "
                              f"of {', '.join(SWITCHES)}")
        try:
            switches[key] = OPTION[key].parse(value)
        except ConfigError as e:
            raise ConfigError(f"variant {text!r}: {e.message}", e.fix) from None
    return Variant(name, switches)


def grid(base: RunConfig, models: list[str], percentiles: list[float],
         variants: list[Variant]) -> list[tuple[Variant, RunConfig]]:
    """Every cell's config, validated before any work starts."""
    cells = []
    for model in models:
        for p in percentiles:
            for v in variants:
                config = replace(base, model=model, percentile=p, run_id=None, **v.switches)
                cells.append((v, config.validate()))
    return cells


def row(variant: Variant, summary: Summary) -> dict[str, Any]:
    """One line of the comparison table from a run's summary."""
    acc = summary.accuracy_per_step
    r = run_record(summary)  # what ran: arch and data set resolved from the checkpoint
    layers = [x for x in summary.layers if x.firing_rate is not None]
    neurons = sum(x.neurons for x in layers)
    rate = (sum(x.firing_rate * x.neurons for x in layers) / neurons  # type: ignore[operator]
            if neurons else None)
    out: dict[str, Any] = {
        "model": r["model"], "arch": arch_text(r), "dataset": r.get("dataset"),
        "percentile": r["percentile"], "variant": variant.name,
        "status": summary.status, "run_id": summary.run_id,
        "ann_acc": _pct(summary.ann_accuracy),
    }
    for t in REPORT_STEPS:
        out[f"acc@{t}"] = _pct(acc[t - 1]) if t <= len(acc) else None
    out["final_acc"] = _pct(acc[-1]) if acc else None
    out["first_step_within_1pt"] = summary.first_step_within_1pt
    out["firing_rate"] = None if rate is None else round(rate, 4)
    out["synops_per_image"] = (None if summary.synops_per_image is None
                               else round(summary.synops_per_image))
    energy = summary.energy or {}
    snn_pj = energy.get("snn_energy_pj")
    out["snn_energy_nj"] = None if snn_pj is None else round(snn_pj / 1e3, 1)
    ratio = energy.get("energy_ratio")
    out["ann_snn_energy"] = None if ratio is None else round(ratio, 2)
    return out


def _pct(x: float | None) -> float | None:
    return None if x is None else round(100 * x, 2)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def to_markdown(rows: list[dict[str, Any]]) -> str:
    cols = [k for k in rows[0] if k not in ("status", "run_id")]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join("—" if r[k] is None else str(r[k]) for k in cols) + " |")
    return "\n".join(lines) + "\n"


def plot(summaries: list[tuple[str, Summary]], path: Path) -> None:
    """Every cell's accuracy curve on one chart, the ANN's accuracy dashed."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    anns = set()
    for label, s in summaries:
        acc = s.accuracy_per_step
        ax.plot(range(1, len(acc) + 1), [100 * a for a in acc], label=label)
        if s.ann_accuracy is not None:
            anns.add(round(100 * s.ann_accuracy, 2))
    for a in sorted(anns):
        ax.axhline(a, color="grey", ls="--", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("time step")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def sweep(base: RunConfig, models: list[str], percentiles: list[float], variants: list[Variant],
          emit: Emit | None = None, cancel: Callable[[], bool] | None = None,
          on_row: Callable[[dict[str, Any]], None] | None = None) -> tuple[list[dict], Path]:
    """Run the grid in order in this process (the inline launcher); write the table after every
    cell (a cancel keeps what was done). Returns the rows and the path of the CSV."""
    from bsnn.sweep_record import plan

    record = plan(grid(base, models, percentiles, variants), base.job_dir, "inline")
    return run_inline(record, emit, cancel, on_row).rows, record.stem.with_suffix(".csv")


def run_inline(record: SweepRecord, emit: Emit | None = None,
               cancel: Callable[[], bool] | None = None,
               on_row: Callable[[dict[str, Any]], None] | None = None) -> Collected:
    """The cells of `record` one after another in this process. A cell that fails on bad
    input (a missing model, say) is a `failed` row and the next cell runs; a run folder that
    cannot be written stops the sweep (every cell would fail alike)."""
    from bsnn.pipeline.runner import run
    from bsnn.sweep_record import collect

    record.save()
    for cell in record.cells:
        if cancel is not None and cancel():
            break
        status = "failed"
        try:
            status = run(RunConfig.from_dict(cell.config), emit, cancel).status
        except RunStorageError:
            raise
        except BsnnError as err:  # in its run folder's `failed` event, or before it had one
            if not record.run_dir(cell).is_dir():
                cell.error = str(err)
                record.save()
        table = collect(record, with_plot=False)
        done = next((r for r in table.rows if r["run_id"] == cell.run_id), None)
        if on_row is not None and done is not None:
            on_row(done)
        if status == "cancelled":
            break
    return collect(record)
