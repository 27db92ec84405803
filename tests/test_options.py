"""The table of run options (bsnn.options): the one source of every run flag, RunConfig field,
dashboard form field, sweep switch and SimOptions argument, and of their defaults and checks."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from bsnn.checks import parse_normalize
from bsnn.cli import build_parser
from bsnn.cli import main as bsnn
from bsnn.config import RunConfig
from bsnn.errors import ConfigError
from bsnn.options import (
    OPTION,
    OPTIONS,
    SHORTCUTS,
    TRAIN_OPTIONS,
    TRAIN_UNSET,
    check_values,
    sim_options_kwargs,
)
from bsnn.snn.options import SimOptions
from bsnn.sweep import SWITCHES
from bsnn_tui.options import build_parser as tui_parser


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


PARSERS = {f"bsnn {name}": p for name, p in subparsers(build_parser()).items()}
PARSERS["bsnn-tui"] = tui_parser()


def flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.option_strings[-1]: a for a in parser._actions if a.option_strings}


@pytest.mark.parametrize("command", list(PARSERS))
def test_every_flag_has_a_help_text(command: str) -> None:
    missing = [flag for flag, a in flags(PARSERS[command]).items()
               if a.help != argparse.SUPPRESS and not (a.help or "").strip()]
    assert not missing, f"{command}: no help for {', '.join(missing)}"


def test_the_walk_sees_every_command() -> None:
    assert {"bsnn convert", "bsnn sweep", "bsnn train", "bsnn info", "bsnn-tui"} <= set(PARSERS)


def test_runconfig_is_the_table() -> None:
    assert [(f.name, f.default) for f in fields(RunConfig)] == \
        [(o.name, o.default) for o in OPTIONS]
    RunConfig().validate()  # the defaults pass the checks


@pytest.mark.parametrize("command", ["bsnn convert", "bsnn sweep", "bsnn-tui"])
def test_every_run_option_is_a_flag_with_the_tables_default(command: str) -> None:
    given = flags(PARSERS[command])
    for o in OPTIONS:
        assert o.flag in given, (command, o.flag)
        assert o.help in given[o.flag].help, (command, o.flag)
    args = PARSERS[command].parse_args([])
    if command == "bsnn sweep":
        assert (args.model, args.percentile) == ([OPTION["model"].default], [99.7])
        args.model, args.percentile = args.model[0], args.percentile[0]
    assert RunConfig.from_args(args) == RunConfig()  # one default each, everywhere


def test_original_flags_are_kept() -> None:
    convert = flags(PARSERS["bsnn convert"])
    for flag in ("--job-dir", "--model", "--results-file", "--seed", "--time", "--batch-size",
                 "--n-workers", "--norm", "--gpu", "--one-step", "--data", "--arch",
                 "--percentile", "--eval_size", "--dataset"):
        assert flag in convert
    assert {s.flag for s in SHORTCUTS} <= set(convert)


@pytest.mark.parametrize(("argv", "device", "propagation"), [
    ([], "auto", "delayed"),  # the original's command line means what it meant there
    (["--gpu"], "cuda", "delayed"),
    (["--gpu", "--device", "cpu"], "cpu", "delayed"),  # an explicit --device wins
    (["--one-step"], "auto", "same-step"),
    (["--propagation", "same-step"], "auto", "same-step"),
    (["--one-step", "--propagation", "delayed"], "auto", "same-step"),  # --one-step wins
])
def test_shortcuts(argv: list[str], device: str, propagation: str) -> None:
    for command in ("bsnn convert", "bsnn-tui"):
        c = RunConfig.from_args(PARSERS[command].parse_args(argv))
        assert (c.device, c.propagation) == (device, propagation), command


def test_train_shares_the_data_options_with_its_own_defaults() -> None:
    train = flags(PARSERS["bsnn train"])
    args = PARSERS["bsnn train"].parse_args([])
    for name in TRAIN_OPTIONS:
        o = OPTION[name]
        assert o.help in train[o.flag].help
        assert tuple(train[o.flag].choices or ()) == o.choices
        if name in TRAIN_UNSET:
            assert getattr(args, name) is None  # the preset decides
            assert f"(default: {TRAIN_UNSET[name]})" in train[o.flag].help
    assert "--gpu" in train and "--one-step" not in train


def test_train_checks_its_shared_flags_with_the_table(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert bsnn(["train", "--batch-size", "0", "--out", "/nonexistent/x.pt"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "batch_size is 0; it must be at least 1" in err and "--batch-size" in err


def test_engine_options_are_simoptions_fields() -> None:
    engine = {o.name for o in OPTIONS if o.engine}
    assert engine == {f.name for f in fields(SimOptions)} - {"time_chunk"}
    config = RunConfig(time=12, v0="half", readout_delay=3, seed=7)
    options = SimOptions(**sim_options_kwargs(config))
    assert (options.time, options.v0, options.readout_delay, options.seed) == (12, "half", 3, 7)


def test_sweep_switches_come_from_the_table() -> None:
    assert set(SWITCHES) == {"v0", "reset", "propagation", "encoding", "threshold_granularity",
                             "binary_weights", "readout_delay", "snn_calibration", "protocol"}


@pytest.mark.parametrize("name", OPTION["dataset"].choices)
def test_every_data_set_choice_has_a_loader(name: str, tmp_path: Path) -> None:
    """A choice the table offers is one the data module loads (or asks for its files)."""
    from bsnn.data import load_split
    from bsnn.errors import BsnnError

    try:
        load_split(name, "val", str(tmp_path / "empty"))
    except BsnnError as err:
        assert "unknown data set" not in err.message


def test_form_labels_fit_the_form() -> None:
    form = [o for o in OPTIONS if o.form]
    assert form and all(0 < len(o.label) <= 14 for o in form)  # the label column is 14 wide


BAD: list[tuple[str, Any, str]] = [
    ("percentile", 0.0, "outside (0, 100]"), ("percentile", float("nan"), "outside"),
    ("time", 0, "at least 1"), ("time", 10**7, "absurdly large"), ("time", 1.5, "whole number"),
    ("batch_size", True, "whole number"), ("eval_size", -2, "eval_size"),
    ("norm", 0, "at least 1"), ("n_workers", -2, "n_workers"), ("seed", "1", "whole number"),
    ("reset", "half", "not known"), ("dataset", "mnist", "not known"),
    ("device", "cuda:x", "not known"), ("val_split", 1.0, "outside (0, 1)"),
    ("image_size", 0, "at least 1"), ("model", "", "no model"),
    ("snn_calibration_size", 0, "at least 1"), ("readout_delay", 80, "outside [0, T)"),
    ("width", 0.0, "outside (0, 16]"), ("width", float("inf"), "outside"),
    ("normalize", "0.5", "not a data set's name nor MEAN,STD"),
    ("normalize", "0.5,0", "every std > 0"), ("normalize", "1,2/3", "2 means but 1 stds"),
]


@pytest.mark.parametrize(("name", "value", "problem"), BAD)
def test_each_check_names_the_problem_and_the_flag(name: str, value: Any, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig(**{name: value}).validate()
    assert problem in info.value.message
    assert OPTION[name].flag in info.value.fix


def test_a_check_sees_the_whole_config() -> None:
    delay = OPTION["readout_delay"]
    delay.validate(70, {"time": 80})
    with pytest.raises(ConfigError, match="between 0 and 63"):
        delay.validate(70, {"time": 64})
    check_values({"readout_delay": 3})  # without T only the lower bound applies
    with pytest.raises(ConfigError):
        check_values({"readout_delay": -1})


def test_parse_types_and_checks_choices() -> None:
    assert OPTION["time"].parse(" 64 ") == 64 and OPTION["percentile"].parse("99") == 99.0
    assert OPTION["val_split"].parse("") is None  # empty is None where None is a value
    with pytest.raises(ConfigError, match="'abc' is not a number"):
        OPTION["percentile"].parse("abc")
    with pytest.raises(ConfigError, match="--v0 one of: zero, half"):
        OPTION["v0"].parse("quarter")


def test_width_and_normalize_reach_every_run_command() -> None:
    argv = ["--width", "0.25", "--normalize", "imagenet"]
    for command in ("bsnn convert", "bsnn-tui"):
        c = RunConfig.from_args(PARSERS[command].parse_args(argv))
        assert (c.width, c.normalize) == (0.25, "imagenet"), command
    sweep = PARSERS["bsnn sweep"].parse_args(argv)
    assert (sweep.width, sweep.normalize) == (0.25, "imagenet")
    train = PARSERS["bsnn train"].parse_args(argv)
    assert (train.width, train.normalize) == (0.25, "imagenet")
    assert RunConfig().width is None and RunConfig().normalize is None  # the checkpoint's
    assert OPTION["normalize"].form and not OPTION["width"].form


def test_normalize_syntax() -> None:
    assert parse_normalize(" imagenet ") == "imagenet"
    assert parse_normalize("0.5,0.25") == ((0.5,), (0.25,))
    assert parse_normalize("0.4,0.5,0.6/1,2,3") == ((0.4, 0.5, 0.6), (1.0, 2.0, 3.0))
    with pytest.raises(ConfigError) as err:
        parse_normalize("cifar")
    assert "cifar10, cifar100, imagenet" in err.value.fix and "M1,M2,M3/S1,S2,S3" in err.value.fix
