"""A run's export files, made from its Summary: JSON, CSV, Markdown and PNG.

Each writer returns the file's bytes or draws into a file object; only `bsnn.runfolder` puts
them on disk (atomically), so a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from typing import IO, Any

from bsnn.diagnostics import agreement_figure
from bsnn.records import (
    RECORD_COLUMNS,
    record_cells,
    record_markdown,
    run_title,
    weights_in_words,
)
from bsnn.summary import Summary

EXPORT_FILES = ("summary.json", "per_timestep.csv", "layers.csv", "summary.md", "accuracy.png",
                "agreement.png")
LAYER_COLUMNS = ("name", "kind", "neurons", "binary", "threshold", "threshold_min",
                 "threshold_max", "lam", "firing_rate", "ann_rate", "ann_mean_activation",
                 "spikes_per_image", "synops_per_image", "macs", "ann_macs_per_image",
                 "snn_ops_per_image", "ann_energy_pj", "snn_energy_pj", "correlation",
                 "clipped_share")
Writer = Callable[[IO[bytes]], object]


def per_timestep_csv(summary: Summary) -> str:
    """t, accuracy, each layer's firing rate at t, then the run's record (RECORD_COLUMNS)."""
    out = io.StringIO()
    w = csv.writer(out)
    rated = [layer for layer in summary.layers if layer.firing_rate_per_step]
    w.writerow(["t", "accuracy", *[f"rate_{x.name}" for x in rated], *RECORD_COLUMNS])
    record = record_cells(summary)
    for t, a in enumerate(summary.accuracy_per_step):
        w.writerow([t + 1, f"{a:.6f}",
                    *[f"{x.firing_rate_per_step[t]:.6f}" for x in rated],  # type: ignore[index]
                    *record])
    return out.getvalue()


def layers_csv(summary: Summary) -> str:
    """One row per spiking layer (LAYER_COLUMNS), then the run's record (RECORD_COLUMNS)."""
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow([*LAYER_COLUMNS, *RECORD_COLUMNS])
    record = record_cells(summary)
    for layer in summary.layers:
        w.writerow(["" if getattr(layer, c) is None else getattr(layer, c)
                    for c in LAYER_COLUMNS] + record)
    return out.getvalue()


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def _num(x: float | None, fmt: str) -> str:
    return "—" if x is None else format(x, fmt)


def _group(summary: Summary) -> str:
    group = summary.distributed
    return f" x {group['world_size']} processes ({group['backend']})" if group else ""


def summary_markdown(summary: Summary) -> str:
    """A short human report for a lab notebook."""
    c, acc = summary.config, summary.accuracy_per_step
    lines = [
        f"# {run_title(summary)}", "", f"bsnn run `{summary.run_id}` — {summary.status}", "",
        *record_markdown(summary),
        f"- {weights_in_words(summary)}",
        f"- percentile {c.get('percentile')}, norm {c.get('norm')}, T = {c.get('time')}, "
        f"propagation {c.get('propagation')}, reset {c.get('reset')}, v0 {c.get('v0')}, "
        f"thresholds per {c.get('threshold_granularity')}",
        f"- images: {summary.images} of {summary.images_total}{_group(summary)}, "
        f"wall time {summary.wall_time_s or 0:.1f} s",
        f"- ANN accuracy (same images): {_pct(summary.ann_accuracy)}",
        f"- SNN accuracy at T: {_pct(summary.final_accuracy)} (best "
        f"{_pct(summary.best_accuracy)}); within 1 point of the ANN from step "
        f"{summary.first_step_within_1pt or '—'}",
        "", "| t | accuracy |", "|---|---|",
    ]
    marks = sorted({t for t in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if t <= len(acc)}
                   | ({len(acc)} if acc else set()))
    lines += [f"| {t} | {_pct(acc[t - 1])} |" for t in marks]
    lines += ["", "| layer | neurons | threshold | firing rate | ANN rate | synops / image |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {x.name} | {x.neurons} | {_num(x.threshold, '.4g')} | "
              f"{_num(x.firing_rate, '.4f')} | {_num(x.ann_rate, '.4f')} "
              f"| {_num(x.synops_per_image, ',.0f')} |" for x in summary.layers]
    lines += operations_markdown(summary)
    if summary.error:
        lines += ["", f"**Failed:** {summary.error['message']} — {summary.error['fix']}"]
    return "\n".join(lines) + "\n"


def operations_markdown(summary: Summary) -> list[str]:
    """Operations and energy per image (docs/operations.md), and how closely each spiking
    layer's rates follow its ANN activations."""
    e = summary.energy or {}
    costs = e.get("costs_pj", {})
    lines = ["", f"Operations and energy per image (pJ per MAC {costs.get('mac')}, per "
             f"accumulate {costs.get('ac')}, per binary op {costs.get('binary')}); r: "
             "correlation of ANN activation / lambda and SNN rate; clipped: activations "
             "above lambda", "",
             "| layer | ANN MACs | SNN ops | ANN nJ | SNN nJ | r | clipped % |",
             "|---|---|---|---|---|---|---|"]
    for x in summary.layers:
        nj = [None if v is None else v / 1e3 for v in (x.ann_energy_pj, x.snn_energy_pj)]
        clipped = x.clipped_share
        lines.append(
            f"| {x.name} | {_num(x.ann_macs_per_image, ',.0f')} | "
            f"{_num(x.snn_ops_per_image, ',.0f')} | {_num(nj[0], ',.1f')} | "
            f"{_num(nj[1], ',.1f')} | {_num(x.correlation, '.3f')} | "
            f"{_num(None if clipped is None else 100 * clipped, '.2f')} |")
    ann, snn = e.get("ann_energy_pj"), e.get("snn_energy_pj")
    lines.append(f"| total | {_num(e.get('ann_macs_per_image'), ',.0f')} | "
                 f"{_num(e.get('snn_ops_per_image'), ',.0f')} | "
                 f"{_num(None if ann is None else ann / 1e3, ',.1f')} | "
                 f"{_num(None if snn is None else snn / 1e3, ',.1f')} | | |")
    lines += ["", f"ANN / SNN energy: {_num(e.get('energy_ratio'), '.2f')}"]
    return lines


def _png(fig: Any) -> Writer:
    """Save a matplotlib figure as PNG into a file object, then free it."""
    from matplotlib import pyplot as plt

    def write(f: IO[bytes]) -> None:
        try:
            fig.savefig(f, format="png")
        finally:
            plt.close(fig)
    return write


def accuracy_figure(summary: Summary) -> Any:
    """Accuracy vs time step with the ANN's accuracy as a reference line."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    acc = summary.accuracy_per_step
    ax.plot(range(1, len(acc) + 1), [100 * a for a in acc], label="SNN")
    if summary.ann_accuracy is not None:
        ax.axhline(100 * summary.ann_accuracy, color="grey", ls="--", label="ANN")
    ax.set_title(run_title(summary), fontsize=9)
    ax.set_xlabel("time step")
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def export_writers(summary: Summary, histograms: dict[str, list[float]] | None,
                   ) -> dict[str, Callable[[], Writer]]:
    """Each export file's name and how to make its writer (figures are drawn only when their
    file is written); `agreement.png` needs the histograms of a run whose every image was
    simulated by the engine."""
    def text(make: Callable[[], str]) -> Callable[[], Writer]:
        def writer() -> Writer:
            body = make().encode()
            return lambda f: f.write(body)
        return writer

    writers: dict[str, Callable[[], Writer]] = {
        "summary.json": text(lambda: json.dumps(summary.to_dict(), indent=2)),
        "per_timestep.csv": text(lambda: per_timestep_csv(summary)),
        "layers.csv": text(lambda: layers_csv(summary)),
        "summary.md": text(lambda: summary_markdown(summary)),
    }
    if summary.accuracy_per_step:
        writers["accuracy.png"] = lambda: _png(accuracy_figure(summary))
    if histograms and any(sum(h) for h in histograms.values()):
        writers["agreement.png"] = lambda: _png(agreement_figure(histograms,
                                                                 run_title(summary)))
    return writers
