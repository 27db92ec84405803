"""`bsnn info MODEL`: what a checkpoint holds, before spending time converting it.

Works on bsnn checkpoints, bundled names (`bundled:digits-fp`) and the original repository's
files, which carry no metadata: for those it shows what the weights themselves tell, binary or
not included (one |w| per output channel in every layer but the first and the last).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "info",
        help="show a checkpoint's metadata: arch, data set, accuracy, recipe, versions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="a checkpoint file or bundled:NAME")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.set_defaults(func=main)


def describe(model: str) -> dict[str, Any]:
    """Everything `info` shows, as plain JSON-able data."""
    from bsnn.checkpoint import (  # torch: only when a checkpoint is read
        FORMAT,
        ModelMeta,
        is_binary_state,
        read_checkpoint,
        resolve_model_path,
        weight_layers,
    )

    path = resolve_model_path(model)
    raw = read_checkpoint(model)
    state: dict[str, torch.Tensor] = raw["state_dict"]
    weights = weight_layers(state)
    info: dict[str, Any] = {
        "model": str(model),
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "parameters": sum(v.numel() for v in state.values() if v.is_floating_point()),
        "tensors": len(state),
    }
    if raw.get("format") != FORMAT:
        last = weights[-1] if weights else None
        binary = is_binary_state(state)
        info |= {
            "layout": "original",
            "note": "no bsnn metadata: original layout",
            "binary": binary,
            "width": None,  # not recorded: such files load at --width (default 1)
            "weight_layers": len(weights),
            "outputs": int(last.shape[0]) if last is not None and last.dim() == 2 else None,
        }
        if binary:
            info["binary_layers"] = len(weights) - 2
        return info
    meta = ModelMeta.from_dict(raw["meta"])
    info |= {"layout": "bsnn", **meta.to_dict()}
    if meta.binary:  # every weighted layer but the first and the last
        info["binary_layers"] = len(weights) - 2
        info["weight_layers"] = len(weights)
    if isinstance(raw.get("train_state"), dict):
        info["epochs_done"] = int(raw["train_state"]["epoch"])
    return info


# what None means in a recipe, per field (the others: "none")
NONE_MEANS = {"arch": "the data set's default", "weight_decay_until": "never",
              "val_split": "none (the data set's own split)",
              "image_size": "the data set's (32 for an image folder)",
              "init": "random", "normalize": "the data set's statistics"}


def in_words(name: str, value: Any) -> str:
    """A recipe value as a person reads it: yes/no, what None means, lists as `a, b`."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if value is None:
        return NONE_MEANS.get(name, "none")
    if isinstance(value, list | tuple):
        return ", ".join(in_words(name, v) for v in value) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def recipe_text(recipe: dict[str, Any]) -> str:
    """`batch size: 32; epochs: 40; lr milestones: none; ...` (`;` as lists hold commas)."""
    return "; ".join(f"{k.replace('_', ' ')}: {in_words(k, v)}" for k, v in recipe.items())


def _fmt_accuracy(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:.2%}"


def _weights_rows(table: Any, info: dict[str, Any], how: str) -> None:
    table.add_row("weights", ("binary" + how) if info["binary"] else "full precision")
    if info["binary"]:
        table.add_row("binary layers", f"{info['binary_layers']} of {info['weight_layers']} "
                                       "(first and last are full precision)")


def main(args: argparse.Namespace) -> int:
    info = describe(args.model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    from bsnn.records import plural

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("model", info["model"])
    if info["path"] != info["model"]:
        table.add_row("file", info["path"])
    table.add_row("size", f"{info['size_bytes'] / 1024:.1f} KiB")
    table.add_row("parameters", f"{info['parameters']:,} in {info['tensors']} tensors")
    if info["layout"] == "original":
        table.add_row("metadata", info["note"])
        table.add_row("weight layers", str(info["weight_layers"]))
        _weights_rows(table, info, " (read from the weights: one |w| per output channel)")
        if info["outputs"]:
            table.add_row("outputs", f"{info['outputs']} (the last layer's; likely the classes)")
        table.add_row("width", "not recorded (loads at --width, default 1)")
        table.add_row("load with", "--arch ARCH --dataset DATASET (e.g. vgg15ab, cifar100)")
    else:
        table.add_row("arch", info["arch"])
        table.add_row("width", f"{info['width']:g}")
        _weights_rows(table, info, "")
        table.add_row("data set", info["dataset"])
        table.add_row("classes", str(info["num_classes"]))
        table.add_row("input shape", " x ".join(map(str, info["input_shape"])))
        table.add_row("mean / std", f"{in_words('mean', info['mean'])} / "
                                    f"{in_words('std', info['std'])}")
        table.add_row("ANN accuracy", _fmt_accuracy(info["ann_accuracy"]))
        if info["recipe"]:
            table.add_row("recipe", recipe_text(info["recipe"]))
        if info["versions"]:
            table.add_row("versions", ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
        if info["source"]:
            table.add_row("source", info["source"])
        if "epochs_done" in info:
            done = plural(info["epochs_done"], "epoch")
            table.add_row("train state", f"{done} done; --resume continues")
    Console(highlight=False).print(table)
    return 0
