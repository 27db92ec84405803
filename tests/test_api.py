"""The Python API (bsnn.load_model, bsnn.convert, bsnn.simulate): the figures of a CLI run, every
kind of input, the CLI's checks, run folders only when asked, and the examples."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import bsnn
import bsnn.api
from bsnn.cli import main
from bsnn.config import RunConfig
from bsnn.data import load_split
from bsnn.errors import ConfigError
from bsnn.events import (
    BatchDone,
    Event,
    Finished,
    Phase,
    Resolved,
    RunWarning,
    Started,
    Thresholds,
)
from bsnn.jobdir import list_runs
from bsnn.runlog import read_events
from bsnn.summary import Summary

ROOT = Path(__file__).resolve().parents[1]
CONVERT = {"norm": 32, "batch_size": 32, "device": "cpu"}
SIMULATE = {"time": 16, "eval_size": 64, "batch_size": 32, "device": "cpu"}
pytestmark = pytest.mark.usefixtures("one_thread")


def figures(summary: dict[str, Any]) -> dict[str, Any]:
    """What a run measured, without what differs between any two runs (ids, times, config)."""
    return {k: summary[k] for k in ("images", "images_total", "time_steps", "ann_accuracy",
                                    "accuracy_per_step", "final_accuracy", "layers",
                                    "synops_per_image", "first_step_within_1pt", "status")}


@pytest.fixture(scope="module")
def api_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], list[Event], Path]:
    """The bundled digits model through the API, from an empty working directory."""
    cwd = tmp_path_factory.mktemp("cwd")
    before = Path.cwd()
    os.chdir(cwd)
    try:
        events: list[Event] = []
        snn = bsnn.convert(bsnn.load_model("bundled:digits-fp"), "digits", **CONVERT)
        result = bsnn.simulate(snn, "digits", on_event=events.append, **SIMULATE)
    finally:
        os.chdir(before)
    return result, events, cwd


def test_the_result_is_typed_and_reads_as_summary_json(
        api_run: tuple[Summary, list[Event], Path]) -> None:
    """Attributes for code, keys for notebooks: `result["layers"][0]["threshold"]` is what
    summary.json holds there. (That every face's figures agree: tests/test_runner.py.)"""
    result, _, _ = api_run
    assert result.final_accuracy == result["final_accuracy"] > 0.9
    assert len(result.accuracy_per_step) == 16
    assert result["layers"] == [layer.to_dict() for layer in result.layers]
    assert result.layers[0].threshold == result["layers"][0]["threshold"]
    assert json.loads(json.dumps(result.to_dict())) == dict(result)


def test_snn_calibration_is_applied_to_a_copy(tiny_model: Path) -> None:
    """Applied by the runner's stage at each simulate, to a copy: the network stays as
    converted, and a second simulate gives the same figures."""
    snn = bsnn.convert(tiny_model, "digits", snn_calibration="bias", snn_calibration_size=48,
                       **CONVERT)
    result = bsnn.simulate(snn, "digits", **SIMULATE)
    assert all(layer["calibration_error"] is not None for layer in result["layers"][:-1])
    again = bsnn.simulate(snn, "digits", **SIMULATE)
    assert figures(again) == figures(result)
    plain = bsnn.convert(tiny_model, "digits", **CONVERT)
    for mine, fresh in zip(snn.network.layers, plain.network.layers, strict=True):
        assert (mine.bias is None and fresh.bias is None) or torch.equal(mine.bias, fresh.bias)
        assert mine.v_init is None and fresh.v_init is None


def test_nothing_is_written_without_a_job_dir(
        api_run: tuple[dict[str, Any], list[Event], Path]) -> None:
    _, _, cwd = api_run
    assert list(cwd.iterdir()) == []


def test_the_callback_gets_the_typed_events_in_order(
        api_run: tuple[dict[str, Any], list[Event], Path]) -> None:
    _, events, _ = api_run
    kinds = [type(e) for e in events]
    assert kinds == [Started, Phase, Resolved, Phase, Thresholds, Phase, BatchDone, BatchDone,
                     Finished]
    assert [e.name for e in events if isinstance(e, Phase)] == [
        "load_data", "threshold_calibration", "simulate"]
    assert [e.seq for e in events] == list(range(len(events)))
    assert [e.images for e in events if isinstance(e, BatchDone)] == [32, 64]
    assert events[0].config["dataset"] == "digits" and events[0].config["time"] == 16


def test_every_kind_of_input_gives_the_same_figures(tiny_model: Path) -> None:
    """A path or a module; calibration by name, tensor, Dataset or DataLoader; evaluation by
    name, (images, labels), TensorDataset or DataLoader: the same images, the same figures."""
    train, _ = load_split("digits", "train")
    val, _ = load_split("digits", "val")
    x_train = torch.stack([train[i][0] for i in range(len(train))])
    x_val = torch.stack([val[i][0] for i in range(64)])
    y_val = torch.tensor([val[i][1] for i in range(64)])
    model = bsnn.load_model(tiny_model)
    assert not model.training and model.meta.arch == "vgg6ab"
    calibrations = ["digits", x_train, TensorDataset(x_train, torch.zeros(len(x_train))),
                    DataLoader(TensorDataset(x_train, torch.zeros(len(x_train))), batch_size=7)]
    evaluations = ["digits", (x_val, y_val), TensorDataset(x_val, y_val),
                   DataLoader(TensorDataset(x_val, y_val), batch_size=5)]
    results = [bsnn.simulate(bsnn.convert(m, c, **CONVERT), e, **SIMULATE)
               for m, c, e in zip([tiny_model, model, model, model], calibrations, evaluations,
                                  strict=True)]
    for result in results[1:]:
        assert figures(result) == figures(results[0])
    assert results[0]["config"]["model"] == str(tiny_model)
    assert results[1]["config"]["model"] == str(tiny_model)  # load_model kept the name
    assert results[1]["config"]["dataset"] is None


@pytest.mark.parametrize(("call", "options"), [
    ("convert", {"percentile": 120.0}),
    ("convert", {"norm": 0}),
    ("convert", {"threshold_granularity": "neuron"}),
    ("simulate", {"time": 8, "readout_delay": 8}),
    ("simulate", {"eval_size": 0}),
    ("simulate", {"encoding": "rate"}),
    ("simulate", {"time": 8.5}),
])
def test_bad_values_raise_the_clis_error(call: str, options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as cli:
        RunConfig(**options).validate()
    with pytest.raises(ConfigError) as api:
        if call == "convert":
            bsnn.convert("bundled:digits-fp", "digits", **options)
        else:
            bsnn.simulate(object(), "digits", **options)  # type: ignore[arg-type]
    assert (api.value.message, api.value.fix) == (cli.value.message, cli.value.fix)


def test_an_unknown_keyword_names_the_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"simulate\(\) has no option 'tme'") as err:
        bsnn.simulate(object(), "digits", tme=8)  # type: ignore[arg-type]
    assert "did you mean time?" in err.value.fix
    with pytest.raises(ConfigError, match=r"convert\(\) has no option 'time'"):
        bsnn.convert("bundled:digits-fp", "digits", time=8)  # a simulation option


def test_bad_data_is_refused(tiny_model: Path) -> None:
    with pytest.raises(ConfigError, match="dataset 'mnist' is not known"):
        bsnn.convert(tiny_model, "mnist", **CONVERT)
    snn = bsnn.convert(tiny_model, "digits", **CONVERT)
    with pytest.raises(ConfigError, match="cannot use a Tensor as evaluation data"):
        bsnn.simulate(snn, torch.zeros(4, 1, 8, 8), **SIMULATE)


def test_a_job_dir_gets_a_run_folder_the_cli_reads(tiny_model: Path, tmp_path: Path) -> None:
    snn = bsnn.convert(tiny_model, "digits", **CONVERT)
    result = bsnn.simulate(snn, "digits", job_dir=tmp_path, run_id="api-run", **SIMULATE)
    (run,) = list_runs(tmp_path)
    assert (run.run_id, run.summary.status) == ("api-run", "finished")
    assert figures(run.summary) == figures(result)
    saved = json.loads((tmp_path / "api-run" / "summary.json").read_text())
    assert figures(saved) == figures(result)
    assert [e.type for e in read_events(tmp_path / "api-run")][-1] == "finished"
    assert main(["report", str(tmp_path / "api-run")]) == 0


def test_too_large_an_eval_size_warns_as_the_cli_does(tiny_model: Path) -> None:
    snn = bsnn.convert(tiny_model, "digits", **CONVERT)
    events: list[Event] = []
    result = bsnn.simulate(snn, (torch.zeros(3, 1, 8, 8), torch.zeros(3)), time=4,
                           eval_size=10, device="cpu", on_event=events.append)
    assert result["warnings"] == ["eval size 10 is larger than the 3 images of the data; "
                                  "using all of them"]
    assert result["images"] == 3 and isinstance(events[3], RunWarning)  # after the resolved


def test_a_cancel_ends_the_run_as_cancelled(tiny_model: Path) -> None:
    snn = bsnn.convert(tiny_model, "digits", **CONVERT)
    result = bsnn.simulate(snn, "digits", cancel=lambda: True, **SIMULATE)
    assert (result["status"], result["images"]) == ("cancelled", 0)


def test_the_api_is_reachable_from_the_package() -> None:
    """The API's names load on first use, also after the conversion subpackage is loaded."""
    assert "bsnn.conversion.chain" in sys.modules
    assert bsnn.convert is bsnn.api.convert
    assert bsnn.simulate is bsnn.api.simulate and bsnn.load_model is bsnn.api.load_model
    assert {"convert", "simulate", "load_model", "ConvertedNetwork"} <= set(dir(bsnn))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        bsnn.nothing  # noqa: B018


def run_example(name: str) -> list[dict[str, str]]:
    """The example's printed figures: one dict of its `key=value` pairs per line."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / name)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return [dict(re.findall(r"(\w+)=(\S+)", line)) for line in done.stdout.splitlines()]


def merged(lines: list[dict[str, str]]) -> dict[str, float]:
    return {k: float(v) for line in lines for k, v in line.items() if k != "layer"}


def test_the_quickstart_example() -> None:
    lines = run_example("quickstart.py")
    out = merged(lines)
    assert out["final_accuracy"] == out["accuracy_t32"] >= 0.95
    assert out["ann_accuracy"] >= 0.95 and out["images"] == 300
    assert out["accuracy_t32"] >= out["accuracy_t16"] > out["accuracy_t1"]
    layers = [line for line in lines if "layer" in line]
    assert [line["layer"] for line in layers] == ["conv1_1", "conv1_2", "conv2_1", "conv2_2",
                                                  "fc1"]
    for line in layers:
        assert 0 < float(line["firing_rate"]) < 1 and float(line["threshold"]) > 0
        assert float(line["synops_per_image"]) > 0


def test_the_custom_data_example() -> None:
    out = merged(run_example("custom_data.py"))
    assert out["final_accuracy"] == out["accuracy_t32"] >= 0.8
    assert abs(out["final_accuracy"] - out["ann_accuracy"]) < 0.05
    assert out["images"] == 397
