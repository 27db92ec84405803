"""bsnn: binary and full-precision ANN -> spiking network conversion and simulation.

The core never imports textual or rich (see tests/test_import_hygiene.py). The Python API
(`bsnn.load_model`, `bsnn.convert`, `bsnn.simulate`, in bsnn.api) loads on first use, so that
`import bsnn.config` stays free of torch.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["ConvertedNetwork", "__version__", "convert", "from_nir", "load_model", "simulate",
           "to_nir"]
_API = ("ConvertedNetwork", "convert", "load_model", "simulate")
_NIR = ("from_nir", "to_nir")  # bsnn.nirio: NIR export and import


def __getattr__(name: str) -> Any:
    if name in _API:
        from bsnn import api

        return getattr(api, name)
    if name in _NIR:
        from bsnn import nirio

        return getattr(nirio, name)
    raise AttributeError(f"module 'bsnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
