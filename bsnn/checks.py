"""The checks of the run options (bsnn.options' table): each judges a valid-typed value against
the whole config and raises ConfigError naming the problem and, in the fix, the flag. Free of
torch, like the table.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from bsnn.errors import ConfigError

if TYPE_CHECKING:
    from bsnn.options import Option

NORMALIZATIONS = ("digits", "cifar10", "cifar100", "imagenet")  # statistics --normalize names
MAX_WIDTH = 16.0  # a width multiplier beyond this is a typo (and would not fit in memory)
Check = Callable[["Option", Any, Mapping[str, Any]], None]


def cost(o: Option, value: float, values: Mapping[str, Any]) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{o.name} is {value}; a cost per operation must be positive",
                          f"pass e.g. {o.flag} {o.default}")


def positive(limit: int) -> Check:
    """At least 1 and at most `limit`: beyond it a value is almost surely a typo (and would
    exhaust memory or patience)."""
    def check(o: Option, value: int, values: Mapping[str, Any]) -> None:
        if value < 1:
            raise ConfigError(f"{o.name} is {value}; it must be at least 1",
                              f"pass a positive {o.flag}")
        if value > limit:
            raise ConfigError(f"{o.name} {value} is absurdly large (limit {limit:,})",
                              f"pass a smaller {o.flag}")
    return check


def percentile(o: Option, value: float, values: Mapping[str, Any]) -> None:
    if math.isnan(value) or not 0 < value <= 100:
        raise ConfigError(f"percentile {value} is outside (0, 100]",
                          f"pass {o.flag} between 0 (exclusive) and 100, e.g. 99.7")


def eval_size(o: Option, value: int, values: Mapping[str, Any]) -> None:
    if value < 1 and value != -1:
        raise ConfigError(f"eval_size is {value}",
                          f"pass a positive {o.flag}, or -1 for the whole set")


def readout_delay(o: Option, value: int, values: Mapping[str, Any]) -> None:
    t = values.get("time")
    known = isinstance(t, int) and t >= 1  # an invalid T is reported by its own check
    if value < 0 or (known and value >= t):
        raise ConfigError(f"readout delay {value} is outside [0, T)",
                          f"pass {o.flag} between 0 and {t - 1 if known else 'T - 1'}")


def n_workers(o: Option, value: int, values: Mapping[str, Any]) -> None:
    if value < -1:
        raise ConfigError(f"n_workers is {value}", f"pass {o.flag} 0 or more (-1: 4 per GPU)")


def device(o: Option, value: str, values: Mapping[str, Any]) -> None:
    if value not in ("auto", "cpu", "cuda") and not value.removeprefix("cuda:").isdigit():
        raise ConfigError(f"device {value!r} is not known",
                          f"pass {o.flag} auto, cpu, cuda or cuda:N")


def fraction(o: Option, value: float, values: Mapping[str, Any]) -> None:
    if not 0 < value < 1:
        raise ConfigError(f"{o.name} {value} is outside (0, 1)", f"pass e.g. {o.flag} 0.1")


def model(o: Option, value: str, values: Mapping[str, Any]) -> None:
    if not value:
        raise ConfigError("no model given", f"pass {o.flag} PATH or a bundled name")


def run_id(o: Option, value: str, values: Mapping[str, Any]) -> None:
    """A run id names a folder inside the job dir, never a path (`../x`, `/tmp/x`): refused
    before anything is written."""
    from bsnn.runfolder import check_run_id  # torch-free; imported here as it imports more

    check_run_id(value)


def width(o: Option, value: float, values: Mapping[str, Any]) -> None:
    if not (math.isfinite(value) and 0 < value <= MAX_WIDTH):
        raise ConfigError(f"width {value} is outside (0, {MAX_WIDTH:g}]",
                          f"pass {o.flag} a multiplier such as 0.25 or 1")


def parse_normalize(text: str) -> str | tuple[tuple[float, ...], tuple[float, ...]]:
    """`--normalize`'s value: a data set's name (its statistics), or (means, stds) from
    `MEAN,STD` (one value for every channel) or `M1,M2,M3/S1,S2,S3` (one per channel). Raises
    ConfigError naming the accepted forms."""
    text = text.strip()
    if text in NORMALIZATIONS:
        return text
    fix = (f"pass --normalize one of {', '.join(NORMALIZATIONS)}, MEAN,STD (e.g. 0.5,0.25) or "
           "M1,M2,M3/S1,S2,S3 (one value per channel)")
    means_text, _, stds_text = text.partition("/" if "/" in text else ",")
    try:
        means = tuple(float(v) for v in means_text.split(","))
        stds = tuple(float(v) for v in stds_text.split(","))
    except ValueError:
        raise ConfigError(f"normalize {text!r} is not a data set's name nor MEAN,STD",
                          fix) from None
    if len(means) != len(stds):
        raise ConfigError(f"normalize {text!r} has {len(means)} means but {len(stds)} stds", fix)
    if not all(math.isfinite(v) for v in means + stds) or min(stds) <= 0:
        raise ConfigError(f"normalize {text!r}: every mean must be finite, every std > 0", fix)
    return means, stds


def normalize(o: Option, value: str, values: Mapping[str, Any]) -> None:
    parse_normalize(value)
