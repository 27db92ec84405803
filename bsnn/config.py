"""RunConfig: everything one conversion + simulation run needs, validated before work starts.

Kept free of torch so the dashboard can build and check a config before torch has loaded.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from bsnn.errors import ConfigError

CHOICES: dict[str, tuple[str, ...]] = {
    "propagation": ("same-step", "delayed"),
    "reset": ("subtract", "zero"),
    "v0": ("zero", "half"),
    "encoding": ("constant", "poisson"),
    "threshold_granularity": ("layer", "channel"),
    "binary_weights": ("alpha", "sign"),
    "backend": ("engine", "bindsnet"),
    "snn_calibration": ("none", "bias", "potential"),
}

# Beyond these a value is almost surely a typo (and would exhaust memory or patience).
LIMITS: dict[str, int] = {"time": 100_000, "batch_size": 65_536, "norm": 10_000_000,
                          "snn_calibration_size": 10_000_000}


@dataclass
class RunConfig:
    """One run. Defaults follow the original `conversion.py` where it had the option."""

    model: str = "bundled:digits-fp"
    dataset: str | None = None  # None: the checkpoint's own data set
    arch: str | None = None  # None: the checkpoint's own architecture
    data: str = "./data/"
    percentile: float = 99.7
    time: int = 80
    batch_size: int = 100
    eval_size: int = -1
    norm: int = 128
    n_workers: int = 4
    seed: int = 0
    device: str = "auto"
    propagation: str = "same-step"
    reset: str = "subtract"
    v0: str = "zero"
    encoding: str = "constant"
    threshold_granularity: str = "layer"
    binary_weights: str = "alpha"
    backend: str = "engine"
    readout_delay: int = 0
    snn_calibration: str = "none"  # Li et al. 2021: correct mean errors via bias or potential
    snn_calibration_size: int = 256  # training images the correction is measured on
    job_dir: str = "runs"
    results_file: str = "sim_result.txt"
    run_id: str | None = None
    val_split: float | None = None
    image_size: int | None = None

    def validate(self) -> RunConfig:
        """Raise ConfigError naming the first bad option and its fix; return self."""
        p = self.percentile
        if not isinstance(p, int | float) or math.isnan(p) or not 0 < p <= 100:
            raise ConfigError(
                f"percentile {p} is outside (0, 100]",
                "pass --percentile between 0 (exclusive) and 100, e.g. 99.7",
            )
        for name in ("time", "batch_size", "norm", "snn_calibration_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} is {value}; it must be at least 1",
                                  f"pass a positive --{name.replace('_', '-')}")
            if value > LIMITS[name]:
                raise ConfigError(f"{name} {value} is absurdly large (limit {LIMITS[name]:,})",
                                  f"pass a smaller --{name.replace('_', '-')}")
        if not isinstance(self.eval_size, int) or (self.eval_size < 1 and self.eval_size != -1):
            raise ConfigError(f"eval_size is {self.eval_size}",
                              "pass a positive --eval_size, or -1 for the whole set")
        if not isinstance(self.readout_delay, int) or not 0 <= self.readout_delay < self.time:
            raise ConfigError(f"readout delay {self.readout_delay} is outside [0, T)",
                              f"pass --readout-delay between 0 and {self.time - 1}")
        if self.n_workers < -1:
            raise ConfigError(f"n_workers is {self.n_workers}", "pass 0 or more (-1: 4 per GPU)")
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} {getattr(self, name)!r} is not known",
                                  f"use one of: {', '.join(allowed)}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError(f"device {self.device!r} is not known",
                              "use auto, cpu, cuda or cuda:N")
        if self.val_split is not None and not 0 < self.val_split < 1:
            raise ConfigError(f"val_split {self.val_split} is outside (0, 1)",
                              "pass e.g. --val-split 0.1")
        if not self.model:
            raise ConfigError("no model given", "pass --model PATH or a bundled name")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
