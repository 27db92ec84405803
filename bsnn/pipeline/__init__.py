"""The one run of bsnn: every face (CLI, dashboard, detached engine, API, sweep) calls it.

  inputs      what a run works on (`Loaded`) and the record of it (`resolved`)
  sources     where it comes from: a RunConfig's names, or the API's objects
  stages      threshold calibration and SNN calibration, one implementation each
  simulation  the evaluation set through the engine, batch by batch (torchrun-aware)
  runner      the state machine and its error policy; `run(config)`

Loads torch on first use of `run` or `Runner`, so importing the package stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__all__ = ["Runner", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(import_module("bsnn.pipeline.runner"), name)
    raise AttributeError(f"module 'bsnn.pipeline' has no attribute {name!r}")
