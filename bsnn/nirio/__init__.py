"""NIR export and import: the converted network in the neuromorphic field's interchange format.

`to_nir` writes a converted network as a chain of NIR nodes, Input -> (Conv2d | Affine |
SumPool2d or AvgPool2d | Flatten)+ -> IF [-> Scale] -> ... -> Affine -> Output, with what NIR
has no field for (initial potentials, the lambdas, the model's metadata) in the graph's metadata;
`from_nir` reads such a chain back to a `ConvertedNetwork` whose spikes are bsnn's, spike for
spike. What carries over, what is refused and how another simulator runs the file: docs/nir.md.
The nir package loads on first use, so bsnn runs without it.

Modules: options (the torch-free constants), write and graph (export), read, reader and ann
(import), rebuild (`bsnn export`'s network from options or a run folder), common (shared).
This package loads torch only when a name of write, read, ann or rebuild is first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from bsnn.nirio.options import (
    CARRIED,
    EXPORT_OPTIONS,
    FORMAT,
    NETWORK_OPTIONS,
    POOLINGS,
    check_carried,
)

_LAZY = {"to_nir": "write", "from_nir": "read", "NirModel": "ann", "export": "rebuild",
         "run_values": "rebuild", "check_rebuilt": "rebuild"}
__all__ = ["CARRIED", "EXPORT_OPTIONS", "FORMAT", "NETWORK_OPTIONS", "POOLINGS", "NirModel",
           "check_carried", "check_rebuilt", "export", "from_nir", "run_values", "to_nir"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(f"bsnn.nirio.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'bsnn.nirio' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
