"""`to_nir`: a converted network written as a NIR file (its nodes: bsnn.nirio.graph)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import bsnn
from bsnn.conversion import Conversion
from bsnn.errors import ConfigError
from bsnn.nirio.common import load_nir
from bsnn.nirio.graph import Graph
from bsnn.nirio.options import EXPORT_DEFAULTS, FORMAT, POOLINGS, check_carried
from bsnn.options import EXPORT_OPTIONS, keyword_values
from bsnn.snn.network import SpikingNetwork

if TYPE_CHECKING:
    from bsnn.api import ConvertedNetwork


def to_nir(snn: ConvertedNetwork, path: str | os.PathLike[str], *, pooling: str = "sum",
           **options: Any) -> Path:
    """Write `snn` to the NIR file `path` (replaced atomically); the path. Options: the
    simulation's that shape the network (EXPORT_OPTIONS: `v0` and, for an SNN calibration,
    which needs a simulation, `time`, `batch_size`, `seed`); those NIR cannot carry are
    refused. `pooling`: sum (SumPool2d, read by most simulators) or avg (AvgPool2d)."""
    nir = load_nir()
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling {pooling!r} is not known", f"use one of: {', '.join(POOLINGS)}")
    o = keyword_values({**EXPORT_DEFAULTS, **options}, EXPORT_OPTIONS, "to_nir")
    check_carried(o)
    network = _calibrated(snn, o).network.to("cpu")
    graph = Graph(nir, pooling)
    graph.write_network(network, o["v0"])
    recorded = {**{k: v for k, v in snn.options.items() if k != "device"}, **o}
    graph.metadata["bsnn"] = json.dumps(_description(snn, network, pooling, recorded,
                                                     graph.layers))
    return _write(nir, graph.build(), Path(path))


def _calibrated(snn: ConvertedNetwork, o: Mapping[str, Any]) -> Conversion:
    """The conversion with its SNN calibration applied (on a copy), by the runner's own stage
    with the run's options, as a run of these options simulates it."""
    if snn.snn_images is None:
        return snn.conversion
    from bsnn.config import RunConfig
    from bsnn.data import make_loader
    from bsnn.pipeline.stages import sim_options, snn_calibrated

    def batches() -> Any:
        for x, _ in make_loader(snn.snn_images, o["batch_size"], seed=o["seed"]):
            yield x.to(snn.device)

    config = RunConfig(**{**snn.options, **o})
    conversion, _ = snn_calibrated(snn.conversion, batches, len(snn.snn_images),
                                   sim_options(config), config.snn_calibration)
    return conversion


def _description(snn: ConvertedNetwork, network: SpikingNetwork, pooling: str,
                 options: Mapping[str, Any], layers: list[dict[str, Any]]) -> dict[str, Any]:
    """The graph's "bsnn" metadata: how to run it as bsnn does, and what NIR has no field for."""
    meta = snn.meta
    return {
        "format": FORMAT, "bsnn_version": bsnn.__version__,
        "neurons": "IF: v += input; spike when v >= v_threshold; then v -= v_threshold "
                   "(reset by subtraction; at most one spike a step); v starts at "
                   "initial_potential (0 where absent)",
        "propagation": "same-step: a spike crosses every layer in the step it is made",
        "readout": "the output node's currents summed over the steps; argmax is the class",
        "pooling": pooling, "percentile": network.percentile,
        "granularity": network.granularity, "input_scale": network.input_scale,
        "model": str(getattr(snn.model, "checkpoint", type(snn.model).__name__)),
        "model_meta": None if meta is None else meta.to_dict(),
        "options": dict(options), "layers": layers,
    }


def _write(nir: ModuleType, graph: Any, path: Path) -> Path:
    """nir.write to a temporary file beside `path`, then renamed: never half a file."""
    if path.is_dir():
        raise ConfigError(f"{path} is a folder", "pass the NIR file to write, e.g. model.nir")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp",
                               dir=path.parent if str(path.parent) else ".")
    os.close(fd)
    try:
        nir.write(tmp, graph)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
