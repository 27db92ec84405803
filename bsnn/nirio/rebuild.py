"""A network exported from the CLI's options or rebuilt from a run folder (`bsnn export`)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bsnn.devices import resolve_device
from bsnn.errors import CheckpointError, ConfigError
from bsnn.nirio.options import EXPORT_OPTIONS, NETWORK_OPTIONS, POOLINGS, check_carried
from bsnn.nirio.write import to_nir
from bsnn.options import CONVERT_OPTIONS, OPTION
from bsnn.snn.network import SpikingNetwork


def export(values: Mapping[str, Any], path: str | os.PathLike[str],
           pooling: str = "sum") -> tuple[Path, SpikingNetwork]:
    """Convert `values["model"]` with the run options `values` (NETWORK_OPTIONS, as a CLI run
    does) and write it to `path`; the path and the network written. What NIR cannot carry is
    refused before any work."""
    from bsnn import api

    check_carried(values)
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling {pooling!r} is not known", f"use one of: {', '.join(POOLINGS)}")
    net = api.load_model(values["model"], dataset=values["dataset"], arch=values["arch"],
                              width=values["width"], data=values["data"])
    meta = getattr(net, "meta", None)
    dataset = values["dataset"] or (meta.dataset if meta is not None else "cifar100")
    snn = api.convert(net, dataset, **{k: values[k] for k in CONVERT_OPTIONS if k in values})
    written = to_nir(snn, path, pooling=pooling, **{k: values[k] for k in EXPORT_OPTIONS})
    return written, snn.network


def run_values(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The options of the run in `run_dir` (NETWORK_OPTIONS) with its checkpoint's absolute
    path, and its layers' thresholds (to check the network rebuilt against). CheckpointError
    when the checkpoint is gone or has changed since the run."""
    from bsnn.events import Resolved, Started, Thresholds
    from bsnn.pipeline.inputs import file_sha256
    from bsnn.runfolder import RunFolder

    events = RunFolder(Path(run_dir)).events()
    started = next((e for e in events if isinstance(e, Started)), None)
    if started is None:
        raise ConfigError(f"{run_dir} is not a run folder (no events.jsonl with a start)",
                          "pass a run folder; `bsnn runs JOB_DIR` lists them")
    config = started.config
    resolved = next((e for e in events if isinstance(e, Resolved)), None)
    thresholds = next((e for e in events if isinstance(e, Thresholds)), None)
    model = (resolved.checkpoint if resolved and resolved.checkpoint else config["model"])
    if not str(model).startswith("bundled:") and not Path(model).is_file():
        raise CheckpointError(f"the checkpoint of run {Path(run_dir).name} is gone: {model}",
                              "put it back, or export with --model FILE and the run's options")
    if resolved and resolved.checkpoint_sha256 and resolved.checkpoint and \
            file_sha256(model) != resolved.checkpoint_sha256:
        raise CheckpointError(f"{model} has changed since run {Path(run_dir).name} (another "
                              "SHA-256)", "put the run's checkpoint back, or export with "
                              "--model FILE")
    values = {n: config.get(n, OPTION[n].default) for n in NETWORK_OPTIONS}
    values |= {"model": model, "dataset": (resolved.dataset if resolved else None)
               or config.get("dataset"), "device": _usable(config.get("device", "auto"))}
    return values, list(thresholds.layers) if thresholds else []


def _usable(device: str) -> str:
    """The run's device where this machine has it, else the CPU (one conversion is cheap)."""
    from bsnn.errors import DeviceError

    try:
        resolve_device(device)
    except (DeviceError, ConfigError):
        return "cpu"
    return device


def check_rebuilt(network: SpikingNetwork, recorded: list[dict[str, Any]],
                  run_dir: str | os.PathLike[str]) -> None:
    """ConfigError unless the network rebuilt for a run has the run's thresholds (relative
    1e-4: percentiles on another device may differ in the last digits)."""
    for now, then in zip(network.describe(), recorded, strict=False):
        a, b = now["threshold"], then.get("threshold")
        if (a is None) != (b is None) or (a is not None and not math.isclose(a, b, rel_tol=1e-4)):
            raise ConfigError(f"the network rebuilt for run {Path(run_dir).name} differs from "
                              f"the run's: {now['name']} threshold {a} vs {b}",
                              "its data changed since the run; export with --model FILE and "
                              "the options you want")
