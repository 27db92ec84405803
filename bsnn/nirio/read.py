"""`from_nir`: a bsnn-shaped NIR file read back as a ConvertedNetwork (its layers:
bsnn.nirio.reader; its ANN: bsnn.nirio.ann)."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import bsnn
from bsnn.conversion import Conversion
from bsnn.conversion.synapses import synapse_fan_out
from bsnn.devices import resolve_device
from bsnn.errors import CheckpointError
from bsnn.nirio.ann import NirModel, ann_groups
from bsnn.nirio.common import load_nir
from bsnn.nirio.options import FORMAT
from bsnn.nirio.reader import Reader, bad
from bsnn.snn.network import SpikingLayer, SpikingNetwork

if TYPE_CHECKING:
    from bsnn.api import ConvertedNetwork


def from_nir(path: str | os.PathLike[str], *, device: str = "auto") -> ConvertedNetwork:
    """Read a bsnn-shaped NIR file (one chain: Input, then layers of conv / affine / pooling /
    flatten ops each ending in IF neurons, the last in the Output) as a ConvertedNetwork on
    `device`; `bsnn.simulate` runs it. A file bsnn wrote gives its network back exactly: the
    same spikes. Anything else is a CheckpointError naming the node and what bsnn reads."""
    from bsnn.api import ConvertedNetwork
    from bsnn.options import CONVERT_OPTIONS

    nir = load_nir()
    graph = _read(nir, Path(path))
    info = _info(graph, path)
    reader = Reader(nir, info, path)
    for name in _chain(nir, graph, path):
        reader.node(name, graph.nodes[name])
    layers = reader.finish()
    for layer, nxt in itertools.pairwise(layers):
        layer.fan_out = synapse_fan_out(nxt.ops, layer.shape)
    dev = resolve_device(device)
    network = SpikingNetwork(layers, reader.input_shape,
                             float(info.get("percentile", 0.0)),
                             info.get("granularity", _granularity(layers)),
                             float(info.get("input_scale", 1.0))).to(dev)
    meta = info.get("model_meta")
    model = NirModel(ann_groups(network.layers), path,
                     None if meta is None else _model_meta(meta))
    recorded = info.get("options", {})
    options = {k: recorded[k] for k in CONVERT_OPTIONS if k in recorded}
    options |= {"device": str(dev), "snn_calibration": "none"}  # already in the network
    return ConvertedNetwork(Conversion(network, model.groups), model.to(dev), dev, options)


def _model_meta(d: Mapping[str, Any]) -> Any:
    from bsnn.checkpoint import ModelMeta

    return ModelMeta.from_dict(dict(d))


def _read(nir: ModuleType, path: Path) -> Any:
    """The graph in `path`; CheckpointError for a missing file or one nir cannot read."""
    if not path.is_file():
        raise CheckpointError(f"NIR file {path} not found", "check the path")
    try:
        graph = nir.read(str(path))
    except Exception as err:  # h5py and nir raise anything from OSError to AssertionError
        raise CheckpointError(f"{path} is not a NIR file nir can read "
                              f"({type(err).__name__}: {err})",
                              "pass a file written by nir.write, e.g. by `bsnn export --nir`"
                              ) from None
    if not isinstance(graph, nir.NIRGraph):
        raise bad(path, f"it holds a single {type(graph).__name__} node, not a graph")
    return graph


def _info(graph: Any, path: str | os.PathLike[str]) -> dict[str, Any]:
    """The "bsnn" metadata of a file bsnn wrote (with its initial potentials); {} otherwise."""
    meta = getattr(graph, "metadata", None) or {}
    text = meta.get("bsnn")
    if text is None:
        return {}
    try:
        info = json.loads(text.decode() if isinstance(text, bytes) else str(text))
    except ValueError:
        raise bad(path, "its \"bsnn\" metadata is not JSON") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{path} was written by another bsnn NIR format "
                              f"({info.get('format') if isinstance(info, dict) else info!r})",
                              f"export it again with this bsnn ({bsnn.__version__})")
    info["initial_potential"] = dict(meta.get("initial_potential") or {})
    return info


def _chain(nir: ModuleType, graph: Any, path: str | os.PathLike[str]) -> list[str]:
    """The node names from the input to the output; CheckpointError unless the graph is one
    chain through every node."""
    nodes = graph.nodes
    ends = {kind: [k for k, n in nodes.items() if isinstance(n, getattr(nir, kind))]
            for kind in ("Input", "Output")}
    for kind, found in ends.items():
        if len(found) != 1:
            raise bad(path, f"it has {len(found)} {kind} nodes; bsnn reads one")
    after: dict[str, list[str]] = {}
    for a, b in graph.edges:
        if a not in nodes or b not in nodes:
            raise bad(path, f"the edge {a} -> {b} names a node it does not have")
        after.setdefault(a, []).append(b)
    order, name = [], ends["Input"][0]
    while name != ends["Output"][0]:
        nxt = after.get(name, [])
        if len(nxt) != 1:
            raise bad(path, f"node {name} leads to {len(nxt)} nodes ({', '.join(nxt)}); "
                       "bsnn reads a chain, without branches")
        name = nxt[0]
        if name in order:
            raise bad(path, f"node {name} is in a loop (recurrence)")
        order.append(name)
    if len(order) + 1 != len(nodes):
        left = sorted(set(nodes) - set(order) - set(ends["Input"]))
        raise bad(path, f"nodes off the input-output chain: {', '.join(left)}")
    return [ends["Input"][0], *order[:-1]]


def _granularity(layers: list[SpikingLayer]) -> str:
    return "layer" if all(layer.threshold is None or layer.threshold.dim() == 0
                          for layer in layers) else "channel"
