"""What writing and reading a NIR graph share: the nir package, loaded on first use, the ops that
carry weights, and kernel sizes as pairs."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from bsnn.conversion.chain import WEIGHTED
from bsnn.errors import ConfigError

__all__ = ["WEIGHTED", "load_nir", "pair"]


def load_nir() -> ModuleType:
    """The nir package, imported here on first use; a ConfigError naming the install if absent."""
    try:
        import nir
    except ImportError:
        raise ConfigError("NIR export and import need the nir package",
                          "pip install nir (or pip install -e '.[nir]')") from None
    return nir


def pair(v: Any) -> tuple[int, int]:
    """A kernel size, stride or padding (one int or two) as a pair of ints."""
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))
