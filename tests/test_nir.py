"""NIR export and import (bsnn.nirio, `bsnn export --nir`): the file read back gives the same
spikes, neuron for neuron; sinabs runs the file as bsnn does; what NIR cannot carry, and files
that are not bsnn-shaped, get one clear message (exit 2 in the CLI).

`python tests/test_nir.py` prints the bsnn-vs-sinabs figures of docs/nir.md.
"""

from __future__ import annotations

import itertools
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import bsnn
from bsnn.cli import main
from bsnn.config import RunConfig
from bsnn.data import load_split
from bsnn.errors import CheckpointError, ConfigError, ConversionError
from bsnn.events import Started
from bsnn.runlog import EventLog
from bsnn.snn.engine import Engine
from bsnn.snn.network import SpikingNetwork
from bsnn.snn.options import SimOptions

nir = pytest.importorskip("nir", reason="NIR export needs the nir package: pip install nir")
CONVERT = {"norm": 32, "batch_size": 32, "device": "cpu"}
pytestmark = pytest.mark.usefixtures("one_thread")


def spikes(net: SpikingNetwork, x: torch.Tensor, **options: Any) -> list[torch.Tensor]:
    """Every neuron's spike count over 24 steps, and the correct count per step, last."""
    counts = Engine(net, SimOptions(time=24, **options)).run_batch(
        x, torch.zeros(len(x), dtype=torch.long), keep_totals=True)
    return [*counts.totals, counts.correct]


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(48, 1, 8, 8, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize(("model", "convert", "export"), [
    ("bundled:digits-fp", {}, {}),
    ("bundled:digits-fp", {}, {"pooling": "avg"}),
    ("bundled:digits-binary", {"threshold_granularity": "channel"}, {"v0": "half"}),
    ("bundled:digits-binary", {"binary_weights": "sign", "snn_calibration": "potential",
                               "snn_calibration_size": 32}, {"time": 24}),
    ("bundled:digits-fp", {"snn_calibration": "bias", "snn_calibration_size": 32,
                           "threshold_granularity": "channel"}, {"time": 24, "v0": "half"}),
])
def test_read_back_spikes_are_identical(tmp_path: Path, images: torch.Tensor, model: str,
                                        convert: dict[str, Any],
                                        export: dict[str, Any]) -> None:
    snn = bsnn.convert(model, "digits", **CONVERT, **convert)
    path = bsnn.to_nir(snn, tmp_path / "net.nir", **export)
    back = bsnn.from_nir(path, device="cpu")
    original = snn.network
    if snn.snn_images is not None:  # the calibration a run applies, which the file holds
        from bsnn.nirio.options import EXPORT_DEFAULTS
        from bsnn.nirio.write import _calibrated

        original = _calibrated(snn, {**EXPORT_DEFAULTS, "time": 24, "batch_size": 100,
                                     "seed": 0, "v0": export.get("v0", "zero")}).network
        assert any(layer.v_init is not None or layer.bias is not None
                   for layer in back.network.layers)
    want = spikes(original, images, v0=export.get("v0", "zero"))
    got = spikes(back.network, images)
    assert sum(float(t.sum()) for t in want[:-1]) > 1000  # the comparison sees real activity
    for a, b in zip(want, got, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(original.layers, back.network.layers, strict=True):
        assert (a.name, a.kind, a.shape, a.binary) == (b.name, b.kind, b.shape, b.binary)
        assert (a.threshold is None and b.threshold is None) or torch.equal(a.threshold,
                                                                            b.threshold)


def test_the_file_holds_the_converted_network(tmp_path: Path) -> None:
    """Nodes in order, thresholds x4 after a 2x2 sum pool, the metadata bsnn reads back."""
    snn = bsnn.convert("bundled:digits-fp", "digits", **CONVERT)
    graph = nir.read(str(bsnn.to_nir(snn, tmp_path / "net.nir")))
    kinds = [type(graph.nodes[b]).__name__ for _, b in graph.edges]
    assert kinds == ["Conv2d", "IF", "Conv2d", "SumPool2d", "IF", "Conv2d", "IF", "Conv2d",
                     "SumPool2d", "IF", "Flatten", "Affine", "IF", "Affine", "Output"]
    layers = snn.network.layers
    assert np.array_equal(graph.nodes["conv1_1.if"].v_threshold,
                          np.full((32, 8, 8), float(layers[0].threshold), dtype=np.float32))
    assert np.array_equal(graph.nodes["conv1_2.if"].v_threshold,
                          np.full((32, 4, 4), 4 * float(layers[1].threshold), dtype=np.float32))
    assert np.array_equal(graph.nodes["fc2.0"].weight, layers[-1].ops[0].weight.numpy())
    info = json.loads(graph.metadata["bsnn"])
    assert [d["name"] for d in info["layers"]] == [layer.name for layer in layers]
    assert info["model_meta"]["dataset"] == "digits" and info["pooling"] == "sum"


def test_simulate_runs_a_read_back_network(tmp_path: Path) -> None:
    """bsnn.simulate on from_nir's network: the figures of the network it came from."""
    snn = bsnn.convert("bundled:digits-binary", "digits", **CONVERT)
    back = bsnn.from_nir(bsnn.to_nir(snn, tmp_path / "net.nir"), device="cpu")
    sim = {"time": 12, "eval_size": 40, "batch_size": 40, "device": "cpu"}
    want, got = bsnn.simulate(snn, "digits", **sim), bsnn.simulate(back, "digits", **sim)
    assert got["accuracy_per_step"] == want["accuracy_per_step"]
    assert got["ann_accuracy"] == want["ann_accuracy"] > 0.8
    assert [row["spikes_per_image"] for row in got["layers"]] == \
        [row["spikes_per_image"] for row in want["layers"]]


@pytest.mark.parametrize(("option", "value", "says"), [
    ("reset", "zero", "--reset subtract"), ("propagation", "delayed", "--propagation same-step"),
    ("encoding", "poisson", "--encoding constant"), ("readout_delay", 3, "--readout-delay 0"),
])
def test_options_nir_cannot_carry_are_refused(tmp_path: Path, option: str, value: Any,
                                              says: str) -> None:
    snn = bsnn.convert("bundled:digits-fp", "digits", **CONVERT)
    with pytest.raises(ConfigError) as err:
        bsnn.to_nir(snn, tmp_path / "net.nir", **{option: value})
    assert "cannot be exported to NIR" in err.value.message and says in err.value.fix
    assert not (tmp_path / "net.nir").exists()


def test_a_max_pool_is_refused(tmp_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), nn.ReLU(),
                          nn.Flatten(), nn.Linear(64, 3))
    snn = bsnn.convert(model, torch.rand(16, 1, 8, 8), norm=16, device="cpu")
    with pytest.raises(ConversionError, match="no max pooling"):
        bsnn.to_nir(snn, tmp_path / "net.nir")


def _graph(*chain: tuple[str, Any]) -> Any:
    nodes = {"input": nir.Input(input_type={"input": np.array([1, 4, 4])}), **dict(chain),
             "output": nir.Output(output_type={"output": np.array([3])})}
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(itertools.pairwise(names)))


def _affine(n_in: int, n_out: int) -> Any:
    return nir.Affine(weight=np.ones((n_out, n_in), dtype=np.float32),
                      bias=np.zeros(n_out, dtype=np.float32))


FLAT = ("flat", nir.Flatten(input_type={"input": np.array([1, 4, 4])}, start_dim=0))


def _if(n: int, r: float = 1.0) -> Any:
    return nir.IF(r=np.full(n, r, dtype=np.float32), v_threshold=np.ones(n, dtype=np.float32))


@pytest.mark.parametrize(("graph", "says"), [
    (_graph(FLAT, ("fc", _affine(16, 3))), "no IF neurons"),
    (_graph(FLAT, ("fc", _affine(16, 5)), ("lif", nir.LIF(
        tau=np.ones(5), r=np.ones(5), v_leak=np.zeros(5), v_threshold=np.ones(5))),
        ("out", _affine(5, 3))), "node lif is a LIF"),
    (_graph(FLAT, ("fc", _affine(16, 5)), ("if", _if(5, r=2.0)), ("out", _affine(5, 3))),
     "r != 1"),
    (_graph(FLAT, ("fc", _affine(16, 5)), ("if", _if(5)), ("if2", _if(5)),
            ("out", _affine(5, 3))), "follows IF neurons"),
    (_graph(FLAT, ("fc", _affine(16, 5)), ("if", _if(4)), ("out", _affine(4, 3))),
     "4 thresholds for 5 neurons"),
])
def test_files_that_are_not_bsnn_shaped_are_refused(tmp_path: Path, graph: Any,
                                                   says: str) -> None:
    path = tmp_path / "other.nir"
    nir.write(str(path), graph)
    with pytest.raises(CheckpointError) as err:
        bsnn.from_nir(path, device="cpu")
    assert "not a bsnn-shaped NIR network" in err.value.message and says in err.value.message
    assert "Input -> (Conv2d" in err.value.fix


def test_a_branching_graph_and_other_files_are_refused(tmp_path: Path) -> None:
    graph = _graph(FLAT, ("fc", _affine(16, 5)), ("if", _if(5)), ("out", _affine(5, 3)))
    graph.edges.append(("fc", "out"))
    nir.write(str(tmp_path / "branch.nir"), graph)
    with pytest.raises(CheckpointError, match="leads to 2 nodes"):
        bsnn.from_nir(tmp_path / "branch.nir", device="cpu")
    (tmp_path / "text.nir").write_text("not hdf5")
    with pytest.raises(CheckpointError, match="is not a NIR file"):
        bsnn.from_nir(tmp_path / "text.nir", device="cpu")
    with pytest.raises(CheckpointError, match="not found"):
        bsnn.from_nir(tmp_path / "missing.nir", device="cpu")


def _run_folder(tmp_path: Path, model: Path, propagation: str = "same-step",
                name: str = "r1") -> Path:
    """A run folder as `bsnn convert --one-step` starts it: the started event holds the
    config."""
    config = RunConfig(model=str(model), dataset="digits", norm=32, batch_size=32,
                       device="cpu", threshold_granularity="channel", v0="half",
                       propagation=propagation)
    run = tmp_path / "runs" / name
    run.mkdir(parents=True)
    log = EventLog(run / "events.jsonl")
    log(Started(run_id=name, run_dir=str(run), config=config.to_dict(), device="cpu"))
    log.close()
    return run


def test_cli_exports_a_run_and_refuses_what_it_cannot(tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "m.pt"
    model.write_bytes(Path(bsnn.__file__).with_name("bundled").joinpath(
        "digits-fp.pt").read_bytes())
    run = _run_folder(tmp_path, model)
    out = tmp_path / "run.nir"
    assert main(["export", "--nir", str(out), str(run)]) == 0
    info = json.loads(nir.read(str(out)).metadata["bsnn"])
    assert info["options"]["v0"] == "half" and info["granularity"] == "channel"
    delayed = _run_folder(tmp_path, model, "delayed", "r2")  # the original's default timing
    assert main(["export", "--nir", str(tmp_path / "d.nir"), str(delayed)]) == 2
    assert "propagation 'delayed' cannot be exported to NIR" in capsys.readouterr().err
    assert main(["export", "--nir", str(out), str(run), "--percentile", "99"]) == 2
    assert "--percentile cannot be combined with a run folder" in capsys.readouterr().err
    assert main(["export", "--nir", str(tmp_path / "z.nir"), "--reset", "zero"]) == 2
    assert "reset 'zero' cannot be exported to NIR" in capsys.readouterr().err
    model.unlink()
    assert main(["export", "--nir", str(tmp_path / "z.nir"), str(run)]) == 2
    err = capsys.readouterr().err
    assert "the checkpoint of run r1 is gone" in err and "fix:" in err
    assert not (tmp_path / "z.nir").exists()


# -- sinabs runs the file ----------------------------------------------------------------------

def sinabs_run(path: Path, x: torch.Tensor, y: torch.Tensor, time: int,
               as_nir_if: bool = True) -> tuple[list[float], float]:
    """The file loaded by sinabs.from_nir and simulated there: accuracy at every step (argmax
    of the output summed so far) and the total spikes. `as_nir_if`: one spike a step and no
    lower bound on v, as NIR's IF defines it; sinabs' importer otherwise keeps its own
    defaults (up to floor(v / theta) spikes a step, v clipped at -theta)."""
    import sinabs.layers as sl
    from sinabs.activation import SingleSpike
    from sinabs.nir import from_nir as sinabs_from_nir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        net = sinabs_from_nir(nir.read(str(path)), batch_size=len(x))
    total = [0.0]
    for layer in net.modules():
        if isinstance(layer, sl.IAFSqueeze):
            layer.register_forward_hook(lambda m, i, out: total.__setitem__(
                0, total[0] + float(out.sum())))
            if as_nir_if:
                layer.spike_fn, layer.min_v_mem = SingleSpike, None
    steps = x[:, None].expand(len(x), time, *x.shape[1:]).reshape(-1, *x.shape[1:])
    with torch.no_grad():
        out = net(steps)
    out = (out[0] if isinstance(out, tuple) else out).reshape(len(x), time, -1)
    correct = (out.cumsum(1).argmax(-1) == y[:, None]).double().mean(0)
    return correct.tolist(), total[0]


def compare(model: str, tmp_path: Path, time: int = 64,
            as_nir_if: bool = True) -> dict[str, Any]:
    """bsnn and sinabs on the same file's network and the 360 digits validation images."""
    snn = bsnn.convert(model, "digits", **CONVERT)
    path = bsnn.to_nir(snn, tmp_path / "digits.nir")
    meta = snn.meta
    data, _ = load_split("digits", "val", normalize=(tuple(meta.mean), tuple(meta.std)))
    x = torch.stack([data[i][0] for i in range(len(data))])
    y = torch.tensor([data[i][1] for i in range(len(data))])
    ours = bsnn.simulate(snn, (x, y), time=time, batch_size=len(x), device="cpu",
                         propagation="same-step")  # what NIR carries
    theirs, spikes_there = sinabs_run(path, x, y, time, as_nir_if)
    spikes_here = sum(row["spikes_per_image"] * ours["images"] for row in ours["layers"]
                      if row["spikes_per_image"] is not None)
    return {"bsnn": ours["accuracy_per_step"], "sinabs": theirs, "images": len(x),
            "bsnn_spikes": spikes_here, "sinabs_spikes": spikes_there}


@pytest.mark.parametrize("model", ["bundled:digits-fp", "bundled:digits-binary"])
def test_sinabs_runs_the_file_as_bsnn_does(tmp_path: Path, model: str) -> None:
    pytest.importorskip("sinabs", reason="the NIR cross-check runs where sinabs is installed: "
                        "pip install -e '.[test]'")
    fig = compare(model, tmp_path)
    assert fig["images"] == 360 and fig["bsnn"][-1] > 0.95
    assert abs(fig["sinabs"][-1] - fig["bsnn"][-1]) <= 0.01  # 1 point at T = 64
    assert max(abs(a - b) for a, b in zip(fig["sinabs"], fig["bsnn"], strict=True)) <= 0.01
    assert fig["bsnn_spikes"] > 1e6
    assert abs(fig["sinabs_spikes"] / fig["bsnn_spikes"] - 1) <= 0.01


if __name__ == "__main__":  # the figures of docs/nir.md
    import tempfile

    torch.set_num_threads(1)
    print("| model | sinabs as | T=64 bsnn | T=64 sinabs | max step diff | spikes bsnn | "
          "spikes sinabs |\n|---|---|---|---|---|---|---|")
    for name in sys.argv[1:] or ["bundled:digits-fp", "bundled:digits-binary"]:
        for strict in (True, False):
            with tempfile.TemporaryDirectory() as tmp:
                f = compare(name, Path(tmp), as_nir_if=strict)
            diff = max(abs(a - b) for a, b in zip(f["sinabs"], f["bsnn"], strict=True))
            print(f"| {name} | {'NIR IF' if strict else 'imported'} | {100 * f['bsnn'][-1]:.2f} "
                  f"| {100 * f['sinabs'][-1]:.2f} | {100 * diff:.2f} | "
                  f"{f['bsnn_spikes']:,.0f} | {f['sinabs_spikes']:,.0f} "
                  f"({100 * (f['sinabs_spikes'] / f['bsnn_spikes'] - 1):+.2f} %) |")
