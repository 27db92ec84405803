"""RunConfig: everything one conversion + simulation run needs, validated before work starts.

Its fields, defaults and checks are the table of run options (bsnn.options): one field per
option, in the table's order, so a new option needs no edit here. Kept free of torch so the
dashboard can build and check a config before torch has loaded.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

from bsnn.options import OPTIONS, check_values, values_from_args

T = TypeVar("T")


def _fields_from_table(cls: type[T]) -> type[T]:
    """Make `cls` a dataclass with one field per run option, defaulting to the option's."""
    cls.__annotations__ = {o.name: o.annotation for o in OPTIONS}
    for o in OPTIONS:
        setattr(cls, o.name, o.default)
    return dataclass(cls)


@_fields_from_table
class RunConfig:
    """One run: a field per option of bsnn.options (model, dataset, time, seed, ...).
    Defaults follow the original `conversion.py` where it had the option."""

    def validate(self) -> RunConfig:
        """Raise ConfigError naming the first bad option and its fix; return self."""
        check_values(self.to_dict())
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """A config from a saved dict; keys of options that no longer exist are dropped."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunConfig:
        """A config from the flags of bsnn.options.add_arguments (--gpu, --one-step applied)."""
        return cls(**values_from_args(args))
