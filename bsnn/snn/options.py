"""The engine's options and their allowed values, checked where they are used.

Free of torch, so `bsnn.options` (the table of run options) takes its choices from here without
loading the engine; `bsnn.snn` imports nothing of bsnn but its errors.
"""

from __future__ import annotations

from dataclasses import dataclass

from bsnn.errors import ConfigError

PROPAGATIONS = ("same-step", "delayed")  # delayed: a step per layer of the original's network
RESETS = ("subtract", "zero")
INITIAL_POTENTIALS = ("zero", "half")  # half: theta / 2
ENCODINGS = ("constant", "poisson")
# auto: fp32, but the +-1 layers fed 0/1 spikes take int8 on a CPU with int8 dot-product units
# (VNNI, AMX) and float16 on CUDA, both exact; fp16: exact float16 on any device (slow on CPUs
# without float16 units); int8: exact int8 on every layer that can (CPU; refused where a binary
# layer or the machine cannot); fp32: float32 everywhere; tf32: auto plus TF32 on the
# full-precision layers (CUDA; not exact). bsnn.snn.precision.plan_currents decides per layer.
PRECISIONS = ("auto", "fp32", "fp16", "int8", "tf32")
MAX_TIME = 100_000  # beyond this a T is almost surely a typo (and exhausts patience)


@dataclass(frozen=True)
class SimOptions:
    """How the engine simulates; refuses unknown strings and out-of-range numbers."""

    time: int
    propagation: str = "same-step"
    reset: str = "subtract"
    v0: str = "zero"
    encoding: str = "constant"
    seed: int = 0
    readout_delay: int = 0  # output ignores the first k steps (their currents are transients)
    time_chunk: int | None = None  # steps per chunk; None: chosen by engine.choose_chunk
    precision: str = "auto"  # one of PRECISIONS

    def __post_init__(self) -> None:
        for name, allowed in (("propagation", PROPAGATIONS), ("reset", RESETS),
                              ("v0", INITIAL_POTENTIALS), ("encoding", ENCODINGS),
                              ("precision", PRECISIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} {getattr(self, name)!r} is not known",
                                  f"use one of: {', '.join(allowed)}")
        if not _is_int(self.time) or not 1 <= self.time <= MAX_TIME:
            raise ConfigError(f"time {self.time!r} is outside [1, {MAX_TIME:,}]",
                              "pass a positive number of time steps")
        if not _is_int(self.readout_delay) or not 0 <= self.readout_delay < self.time:
            raise ConfigError(f"readout delay {self.readout_delay!r} is outside [0, T)",
                              f"pass a readout delay between 0 and {self.time - 1}")
        if self.time_chunk is not None and (not _is_int(self.time_chunk) or self.time_chunk < 1):
            raise ConfigError(f"time chunk {self.time_chunk!r} must be a positive integer",
                              "pass None to let the engine choose")
        if not _is_int(self.seed):
            raise ConfigError(f"seed {self.seed!r} is not an integer", "pass an integer seed")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
