"""Which device a run or a training uses, and how many data-loader processes feed it.

One policy for `bsnn convert` and `bsnn train`, so both read --device and --n-workers alike.
"""

from __future__ import annotations

import os

import torch

from bsnn.errors import ConfigError, DeviceError

IN_MEMORY_DATASETS = ("digits",)  # held in memory: worker processes would only add overhead


def resolve_device(spec: str = "auto") -> torch.device:
    """auto | cpu | cuda | cuda:N -> a device that exists, or DeviceError saying why not."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec} was asked for, but this torch sees no CUDA GPU",
                              "use --device cpu (or auto), or install a CUDA build of torch")
        try:
            device = torch.device(spec)
        except RuntimeError:
            raise ConfigError(f"device {spec!r} is not valid", "use cuda or cuda:N") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{spec}: only {torch.cuda.device_count()} CUDA device(s) here",
                              f"use cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
        return device
    raise ConfigError(f"device {spec!r} is not known", "use auto, cpu, cuda or cuda:N")


def loader_workers(wanted: int | None, dataset: str, device: torch.device,
                   processes: int = 1) -> int:
    """Data-loader processes: `wanted` (-1: 4 per GPU, 4 on CPU; None: 0 on CPU, up to 4 a
    process with CUDA), none for in-memory data sets, and never more than this process's share
    of the cores (more loader processes than cores only thrash)."""
    if dataset in IN_MEMORY_DATASETS:
        return 0
    cores = max(1, (os.cpu_count() or 1) // processes)
    if wanted is None:
        wanted = 4 if device.type == "cuda" else 0
    elif wanted == -1:
        wanted = 4 * max(1, torch.cuda.device_count()) if device.type == "cuda" else 4
    return min(wanted, cores)
