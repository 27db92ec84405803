"""What a run used, in the words every record shows: titles, the resolved record, its cells.

The CLI, the dashboard, the exports and `bsnn runs` name a run the same way because they all
read it from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bsnn.summary import Summary

RECORD_COLUMNS = ("run_id", "model", "arch", "width", "dataset", "data_path", "image_size",
                  "mean", "std", "device", "checkpoint_sha256", "bsnn", "torch", "T",
                  "percentile")


def plural(count: int, word: str) -> str:
    """`1 epoch`, `2 epochs`: a count as a person writes it (English -s plurals only)."""
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def run_record(summary: Summary) -> dict[str, Any]:
    """What the run used: its `resolved` event where it got that far, else what was typed (a
    run that failed while loading, or one from an older bsnn), with `origin` saying so."""
    c = summary.config
    r = summary.resolved or {
        "model": c.get("model"), "arch": c.get("arch"), "width": c.get("width"),
        "dataset": c.get("dataset"), "data_path": c.get("data"), "device": summary.device,
        "versions": summary.versions, "origin": {"all": "as typed: the run did not get to "
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


def run_title(summary: Summary) -> str:
    """Model, arch, data set, T and percentile: the title of a run's plot and report."""
    r = run_record(summary)
    return (f"{model_name(r['model'])} ({arch_text(r)}) on {r.get('dataset') or '?'}, "
            f"T={r['time_steps']}, p={r['percentile']}")


def record_cells(summary: Summary) -> list[str]:
    """RECORD_COLUMNS' values: the CSV exports repeat them on every row, so a CSV read away
    from its run folder (or concatenated with others) still says what ran."""
    r = run_record(summary)
    shape = r.get("input_shape")
    values = [summary.run_id, r["model"], r.get("arch"), r.get("width"), r.get("dataset"),
              r.get("data_path"), "x".join(map(str, shape)) if shape else None,
              _floats(r.get("mean")), _floats(r.get("std")), r.get("device"),
              r.get("checkpoint_sha256"), r["versions"].get("bsnn"), r["versions"].get("torch"),
              r["time_steps"], r["percentile"]]
    return ["" if v is None else str(v) for v in values]


def _floats(values: list[float] | None) -> str | None:
    return None if values is None else " ".join(f"{v:.6g}" for v in values)


def weights_in_words(summary: Summary) -> str:
    """Whether the converted network has binary layers, and how their weights were used."""
    binary, spiking = summary.binary_layers, max(0, len(summary.layers) - 1)
    if not binary:
        return "full-precision weights"
    mode = summary.config.get("binary_weights")
    return f"binary weights in {binary} of {spiking} spiking layers (--binary-weights {mode})"


def record_markdown(summary: Summary) -> list[str]:
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
