"""bsnn: binary and full-precision ANN -> spiking network conversion and simulation.

The core never imports textual or rich (see tests/test_import_hygiene.py). The Python API
(`bsnn.load_model`, `bsnn.convert`, `bsnn.simulate`, in bsnn.api) loads on first use, so that
`import bsnn.config` stays free of torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["ConvertedNetwork", "__version__", "convert", "load_model", "simulate"]
_API = ("ConvertedNetwork", "convert", "load_model", "simulate")


def __getattr__(name: str) -> Any:
    if name in _API:
        from bsnn import api

        return getattr(api, name)
    raise AttributeError(f"module 'bsnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
