"""THE table of run options: every option of a run is declared once, here.

`bsnn convert`, `bsnn sweep`, `bsnn train` and `bsnn-tui` build their flags from it, RunConfig
its fields and its checks, the dashboard its form, a sweep its switches, and the run loop the
engine's SimOptions (`sim_options_kwargs`). To add a run option: one `Option` in OPTIONS (with
`engine=True` if SimOptions takes it) and its use in the engine. Free of torch, textual and rich,
so a config is checked before torch has loaded.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bsnn import checks
from bsnn.checks import Check
from bsnn.errors import ConfigError
from bsnn.snn.options import (
    ENCODINGS,
    INITIAL_POTENTIALS,
    MAX_TIME,
    PRECISIONS,
    PROPAGATIONS,
    RESETS,
)

PROTOCOLS = ("bsnn", "original")  # original: conversion.py's calibration and evaluation
GRANULARITIES = ("layer", "channel")  # one threshold per layer, or one per channel
BINARY_WEIGHTS = ("sign", "alpha")  # binary weights +-1 with alpha folded, or kept as +-alpha
BACKENDS = ("engine", "bindsnet")  # bindsnet: the reference simulator
SNN_CALIBRATIONS = ("none", "bias", "potential")  # Li et al. 2021: where the correction goes
DATASETS = ("digits", "cifar10", "cifar100", "imagenet", "imagefolder")
KINDS = {int: "a whole number", float: "a number", str: "text"}

Parser = argparse.ArgumentParser | argparse._ArgumentGroup


@dataclass(frozen=True)
class Option:
    """One run option. `check` judges a valid-typed value against the whole config (all values
    by name) and raises ConfigError naming the problem and, in the fix, the flag."""

    name: str  # the RunConfig field
    label: str  # on the dashboard's form
    help: str
    type: type = str
    default: Any = None
    choices: tuple[str, ...] = ()
    check: Check | None = None
    optional: bool = False  # None is a value (e.g. "the checkpoint's")
    shown: str = ""  # the default in words, where the value says too little
    flag: str = ""  # "": --name-with-dashes
    metavar: str | None = None
    aliases: tuple[str, ...] = ()  # more flags for it (the original's --eval_size beside ours)
    form: bool = False  # a field of the dashboard's form (in the table's order)
    switch: bool = False  # a `bsnn sweep` variant may set it
    many: bool = False  # `bsnn sweep` takes several values (one run each)
    engine: bool = False  # a SimOptions field of the same name
    faces: str = ""  # the calls that take it: convert, simulate, export, network, train

    def __post_init__(self) -> None:
        if not self.flag:
            object.__setattr__(self, "flag", "--" + self.name.replace("_", "-"))

    @property
    def annotation(self) -> str:
        return self.type.__name__ + (" | None" if self.optional else "")

    def parse(self, text: str) -> Any:
        """Typed text (a form field, a sweep variant) as this option's value; ConfigError when
        it is not of the option's type or not one of its choices. Empty is None where None is a
        value."""
        if self.optional and not text.strip():
            return None
        try:
            value = self.type(text.strip())
        except ValueError:
            kind = KINDS[self.type]
            raise ConfigError(f"{self.name} {text.strip()!r} is not {kind}",
                              f"{self.flag} takes {kind}") from None
        self._check_choice(value)
        return value

    def validate(self, value: Any, values: Mapping[str, Any]) -> None:
        """The value's type, choice and check; `values`: the whole config, for the checks that
        depend on other options (the readout delay on T)."""
        if value is None and self.optional:
            return
        if not _is_a(value, self.type):
            kind = KINDS[self.type]
            raise ConfigError(f"{self.name} {value!r} is not {kind}", f"pass {kind} to {self.flag}")
        self._check_choice(value)
        if self.check is not None:
            self.check(self, value, values)

    def _check_choice(self, value: Any) -> None:
        if self.choices and value not in self.choices:
            raise ConfigError(f"{self.name} {value!r} is not known",
                              f"pass {self.flag} one of: {', '.join(self.choices)}")

    def add_to(self, parser: Parser, default: Any, shown: str, many: bool = False) -> None:
        """This option as an argparse flag with `default` ("`shown`" in its help)."""
        kw: dict[str, Any] = {"dest": self.name, "metavar": self.metavar,
                              "help": f"{self.help} (default: {shown})".replace("%", "%%")}
        if self.type is not str:
            kw["type"] = self.type
        if self.choices:
            kw["choices"] = self.choices
        kw |= {"nargs": "+", "default": [default]} if many else {"default": default}
        parser.add_argument(*self.aliases, self.flag, **kw)


@dataclass(frozen=True)
class Shortcut:
    """A flag of the original conversion.py that stands for another option's value. With
    `wins`, it beats that option's own flag; else the option's flag, when given, does."""

    flag: str
    name: str
    value: str
    wins: bool
    help: str

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


def _is_a(value: Any, kind: type) -> bool:
    """isinstance, refusing bools and taking whole numbers as numbers."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


# -- the table: the form's fields first, in the form's order -----------------------------------

OPTIONS: tuple[Option, ...] = (
    Option("model", "model", "checkpoint path or bundled name, e.g. bundled:digits-binary",
           default="bundled:digits-fp", check=checks.model, form=True,
           many=True, faces="network"),
    Option("dataset", "data set", "data set", choices=DATASETS, optional=True,
           shown="the checkpoint's; cifar100 for original files", form=True, faces="network train"),
    Option("data", "data path", "data root (an image folder: the folder of class folders)",
           default="./data/", metavar="DIR", form=True, faces="convert simulate network train"),
    Option("arch", "arch", "architecture: vgg15ab (the paper's), vgg15avg, vgg15max, vgg8ab, "
           "vgg6ab, ...; convert needs it only for checkpoints without metadata", optional=True,
           shown="the checkpoint's", form=True, faces="network train"),
    Option("normalize", "normalize", "input statistics: a data set's (digits, cifar10, cifar100, "
           "imagenet), MEAN,STD for every channel, or M1,M2,M3/S1,S2,S3", optional=True,
           check=checks.normalize, metavar="STATS", form=True,
           shown="the checkpoint's; the data set's own for files without metadata",
           faces="convert simulate train"),
    Option("device", "device", "auto, cpu, cuda or cuda:N", default="auto", check=checks.device,
           shown="auto: CUDA when there is one", form=True, faces="convert simulate train"),
    Option("percentile", "percentile", "percentile of each layer's ANN activations that sets "
           "its threshold", float, 99.7, check=checks.percentile, form=True, many=True,
           faces="convert"),
    # 80 steps, the original conversion.py's default, everywhere (the dashboard too)
    Option("time", "time steps T", "time steps T", int, 80, check=checks.positive(MAX_TIME),
           metavar="T", form=True, engine=True, faces="simulate export"),
    Option("batch_size", "batch size", "images per batch", int, 100, check=checks.positive(65_536),
           form=True, faces="convert simulate export train"),
    Option("eval_size", "eval size", "images evaluated, -1 all", int, -1, check=checks.eval_size,
           flag="--eval_size", aliases=("--eval-size",), form=True, faces="simulate"),
    Option("norm", "norm (calib.)", "training images used to calibrate thresholds", int, 128,
           check=checks.positive(10_000_000), form=True, faces="convert"),
    Option("seed", "seed", "random seed of every draw (data order, image subsets, Poisson "
           "spikes; in training also init and augmentation)", int, 0, form=True, engine=True,
           faces="convert simulate export train"),
    Option("readout_delay", "readout delay", "the output ignores the first K steps", int, 0,
           check=checks.readout_delay, metavar="K", form=True, switch=True, engine=True,
           faces="simulate export"),
    # delayed: the original conversion.py's timing without --one-step (its network.py run loop)
    Option("propagation", "propagation", "delayed: the original's timing, a step per conv, "
           "linear and pooling layer (VGG-15's readout hears its first spike at step 20); or "
           "same-step: a spike crosses every layer in its step (the original's --one-step)",
           choices=PROPAGATIONS, default="delayed", form=True, switch=True,
           engine=True, faces="simulate export"),
    Option("reset", "reset", "reset by subtraction or to zero", choices=RESETS,
           default="subtract", form=True, switch=True, engine=True, faces="simulate export"),
    Option("v0", "v0", "initial potential: 0 or theta/2", choices=INITIAL_POTENTIALS,
           default="zero", form=True, switch=True, engine=True, faces="simulate export"),
    Option("encoding", "encoding", "input: the analog image every step, or seeded Poisson "
           "spikes", choices=ENCODINGS, default="constant", form=True, switch=True, engine=True,
           faces="simulate export"),
    Option("threshold_granularity", "thresholds per", "one threshold per layer or per channel",
           choices=GRANULARITIES, default="layer", form=True, switch=True, faces="convert"),
    Option("snn_calibration", "SNN calib.", "Li et al. 2021: correct each layer's mean error "
           "through its bias or its initial potential", choices=SNN_CALIBRATIONS,
           default="none", form=True, switch=True, faces="convert"),
    Option("job_dir", "job dir", "results folder; one run folder per run", default="runs",
           metavar="DIR", form=True, faces="simulate"),
    Option("binary_weights", "binary weights", "binary layers' weights: +-1 with alpha folded "
           "into the thresholds (the same network; integer sums, so exact int8 where the CPU "
           "has it), or +-alpha as the original", choices=BINARY_WEIGHTS, default="sign",
           switch=True, faces="convert"),
    Option("protocol", "protocol", "bsnn: thresholds from --norm random training images (eval "
           "transform, dropout off), a deterministic evaluation; original: the original "
           "conversion.py's, for like-for-like comparison with its figures: thresholds from "
           "the first --norm training images in order, with the training transform (random "
           "crop and flip) and dropout active, and the test set evaluated with the training "
           "transform in a shuffled order (its defects, kept only here: figures vary with "
           "--seed)", choices=PROTOCOLS, default="bsnn", switch=True,
           faces="convert simulate"),
    Option("backend", "backend", "simulator: the engine, or bindsnet (the reference)",
           choices=BACKENDS, default="engine", faces="simulate"),
    Option("precision", "precision", "arithmetic of the engine's layer currents: auto (float32; "
           "binary layers, +-1 under the default --binary-weights sign, take exact int8 on a "
           "CPU with VNNI or AMX and exact float16 on CUDA), fp32, fp16 (exact float16 on "
           "any device), int8 (exact int8 on every layer that can, CPU only; refused where a "
           "binary layer or the machine cannot) or tf32 (auto plus TF32 on the full-precision "
           "layers: faster on CUDA, not exact); the run's simulate phase names each layer's",
           choices=PRECISIONS,
           default="auto", engine=True, faces="simulate"),
    Option("snn_calibration_size", "SNN calib. size", "training images for --snn-calibration",
           int, 256, check=checks.positive(10_000_000), faces="convert"),
    Option("n_workers", "loader workers", "data loader workers (-1: 4 per GPU)", int, 4,
           check=checks.n_workers, faces="train"),
    Option("results_file", "results file", "CSV line appended to <job-dir>/results/NAME (as "
           "the original)", default="sim_result.txt"),
    Option("run_id", "run id", "name of the run folder", optional=True, shown="time-based",
           check=checks.run_id,
    faces="simulate"),
    Option("val_split", "val split", "an image folder without val/: the fraction held out for "
           "evaluation", float, check=checks.fraction, optional=True, shown="none",
           faces="convert simulate train"),
    Option("image_size", "image size", "resize an image folder's images to this side length",
           int, check=checks.positive(10_000), optional=True,
           shown="32; the other data sets keep their own size",
           faces="convert simulate train"),
    Option("width", "width", "width multiplier of the conv and hidden layers (convert needs it "
           "only for checkpoints without metadata)", float, check=checks.width, optional=True,
           shown="the checkpoint's; 1 for files without metadata", faces="network train"),
    # costs per operation of the energy estimate (docs/operations.md): 45 nm, Horowitz 2014
    Option("energy_mac_pj", "MAC pJ", "energy estimate: pJ per multiply-accumulate (32-bit "
           "float: multiply 3.7 + add 0.9)", float, 4.6, check=checks.cost, faces="simulate"),
    Option("energy_ac_pj", "AC pJ", "energy estimate: pJ per accumulate (32-bit float add), "
           "the SNN's synaptic operation", float, 0.9, check=checks.cost, faces="simulate"),
    Option("energy_binary_pj", "binary op pJ", "energy estimate: pJ per op of a binary ANN "
           "layer (an add or subtract of a float)", float, 0.9, check=checks.cost,
           faces="simulate"),
)
OPTION: dict[str, Option] = {o.name: o for o in OPTIONS}

SHORTCUTS = (
    Shortcut("--gpu", "device", "cuda", False, "run on CUDA (same as --device cuda; an "
             "explicit --device wins)"),
    Shortcut("--one-step", "propagation", "same-step", True, "same-step propagation (the "
             "original's flag: a spike crosses every layer in one step; it wins over "
             "--propagation)"),
)



def names_for(*faces: str) -> tuple[str, ...]:
    """The options tagged with any of `faces`, in the table's order."""
    return tuple(o.name for o in OPTIONS if set(o.faces.split()) & set(faces))


# What each face takes, from the tags: the API's calls (convert: the thresholds; simulate: the
# run), the NIR export's simulation options and the network it rebuilds (`bsnn export`), and
# `bsnn train`, whose defaults differ where training does: None leaves the preset's value (each
# flag given overrides one field of the recipe), the data folder is needed only by data sets
# read from disk, and loader workers follow the device.
CONVERT_OPTIONS = names_for("convert")
SIMULATE_OPTIONS = names_for("simulate")
EXPORT_OPTIONS = names_for("export")
NETWORK_OPTIONS = names_for("network", "convert", "export")
TRAIN_OPTIONS = names_for("train")
TRAIN_UNSET: dict[str, str] = {  # name -> train's default (None) in words
    "dataset": "the preset's", "data": "none; data sets read from disk need it",
    "arch": "the preset's", "width": "the preset's: 1, the arch as named",
    "normalize": "the data set's own statistics",
    "batch_size": "the preset's; the global batch under torchrun",
    "seed": "the preset's", "n_workers": "0 on CPU, up to 4 a process with CUDA",
}


def add_arguments(parser: Parser, names: Iterable[str] | None = None, *, many: bool = False,
                  unset: Mapping[str, str] | None = None) -> None:
    """Flags for the options `names` (all by default) in the table's order, each shortcut after
    its option. `many`: the options marked so take several values (bsnn sweep). `unset`:
    options whose default is None here, with what that means (bsnn train)."""
    chosen = set(OPTION if names is None else names)
    unset = unset or {}
    for o in OPTIONS:
        if o.name not in chosen:
            continue
        shortcuts = [s for s in SHORTCUTS if s.name == o.name]
        default = None if o.name in unset or any(not s.wins for s in shortcuts) else o.default
        o.add_to(parser, default, unset.get(o.name, o.shown or str(o.default)),
                 many=many and o.many)
        for s in shortcuts:
            parser.add_argument(s.flag, action="store_true", help=s.help)


def values_from_args(args: argparse.Namespace, unset: Collection[str] = ()) -> dict[str, Any]:
    """The run options among parsed flags, shortcuts applied; a flag left out takes the table's
    default, or stays None for the options in `unset` (bsnn train: the preset's)."""
    values = {o.name: getattr(args, o.name) for o in OPTIONS if hasattr(args, o.name)}
    for s in SHORTCUTS:
        if getattr(args, s.dest, False) and (s.wins or values.get(s.name) is None):
            values[s.name] = s.value
    for name, value in values.items():
        if value is None and name not in unset:
            values[name] = OPTION[name].default
    return values


def check_values(values: Mapping[str, Any]) -> None:
    """Each option in `values` against all of them, in the table's order: the first bad one
    raises ConfigError."""
    for o in OPTIONS:
        if o.name in values:
            o.validate(values[o.name], values)


def keyword_values(given: Mapping[str, Any], names: tuple[str, ...],
                   caller: str) -> dict[str, Any]:
    """A Python call's options: the table's defaults updated with `given`, checked as the CLI
    checks its flags; an unknown keyword is a ConfigError naming the close matches. `job_dir`
    defaults to None there (nothing written unless a run folder is asked for)."""
    for name in given:
        if name not in names:
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise ConfigError(f"{caller}() has no option {name!r}",
                              f"{hint}{caller}() takes: {', '.join(names)}")
    values = {n: OPTION[n].default for n in names} | {
        k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in given.items()}
    if "job_dir" in names and "job_dir" not in given:
        values["job_dir"] = None
    check_values({k: v for k, v in values.items() if not (k == "job_dir" and v is None)})
    return values


def sim_options_kwargs(config: Any) -> dict[str, Any]:
    """SimOptions' keyword arguments from a RunConfig: the options marked `engine`."""
    return {o.name: getattr(config, o.name) for o in OPTIONS if o.engine}
