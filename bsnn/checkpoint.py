"""Save and load models with their metadata; read the original repository's files too.

Always `torch.load(..., weights_only=True)`: a checkpoint is data, and a pickle that tries to run
code is refused before anything runs.

The original repository's files carry no metadata. Whether such a file is binary is read from its
weights: the authors saved binary models with sign(W) * alpha in place of the real weights, so
every layer but the first and the last has one |w| per output channel (`is_binary_state`).
"""

from __future__ import annotations

import difflib
import os
import pickle
import platform
import zipfile
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

import bsnn
from bsnn.errors import CheckpointError
from bsnn.models import build_model

FORMAT = "bsnn-checkpoint"
BUNDLED_PREFIX = "bundled:"
BINARY_RTOL = 1e-6  # |w| of a binary layer's output channel: equal within this relative spread


@dataclass
class ModelMeta:
    """What a checkpoint says about its model; enough to rebuild and to report it."""

    arch: str
    dataset: str
    num_classes: int
    input_shape: tuple[int, int, int]
    binary: bool = False
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    ann_accuracy: float | None = None
    recipe: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    source: str = ""
    width: float = 1.0  # the width multiplier it was built with (1.0 in older checkpoints)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["input_shape"] = tuple(int(v) for v in known["input_shape"])
        known["mean"] = tuple(known.get("mean", ()))
        known["std"] = tuple(known.get("std", ()))
        return cls(**known)


def versions() -> dict[str, str]:
    """Library versions recorded with checkpoints and runs."""
    import numpy

    return {
        "bsnn": bsnn.__version__,
        "torch": str(torch.__version__),
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def bundled_names() -> list[str]:
    """The models shipped with the package, as `bundled:NAME`."""
    folder = resources.files("bsnn") / "bundled"
    return sorted(
        BUNDLED_PREFIX + p.name.removesuffix(".pt")
        for p in folder.iterdir()
        if p.name.endswith(".pt")
    )


def resolve_model_path(model: str | os.PathLike[str]) -> Path:
    """A path, or `bundled:NAME` -> the packaged file. Raises CheckpointError if absent."""
    text = str(model)
    if text.startswith(BUNDLED_PREFIX):
        path = Path(str(resources.files("bsnn") / "bundled" / (text[len(BUNDLED_PREFIX):] + ".pt")))
        if not path.is_file():
            names = bundled_names()
            near = difflib.get_close_matches(text, names, n=1)
            raise CheckpointError(
                f"no bundled model {text!r}",
                (f"did you mean {near[0]}? " if near else "")
                + f"use one of: {', '.join(names) or '(none installed)'}",
            )
        return path
    path = Path(text).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"model file {text} not found",
            f"check the path, or use a bundled model ({', '.join(bundled_names())})",
        )
    if path.is_dir():
        raise CheckpointError(f"model path {text} is a folder", "pass the checkpoint file itself")
    if not path.is_file():  # a FIFO or a device: reading it could block or never end
        raise CheckpointError(f"model path {text} is not a regular file",
                              "pass the checkpoint file itself, not a pipe or a device")
    if path.stat().st_size == 0:
        raise CheckpointError(f"model file {text} is empty",
                              "re-save or re-download the checkpoint")
    return path


def _check_magic(path: Path) -> None:
    """torch.save writes a zip archive (or, before torch 1.6, a pickle that opens with the
    PROTO opcode); anything else (a text file, an image) is refused before unpickling."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as e:
        raise CheckpointError(f"cannot read {path} ({e.strerror})",
                              "check the path and its permissions") from None
    if not head:
        raise CheckpointError(f"{path} is empty", "copy or download the checkpoint again")
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint (it starts with {head!r})",
            "pass a file written by torch.save or `bsnn train`",
        )


def read_checkpoint(model: str | os.PathLike[str]) -> dict[str, Any]:
    """Load the raw dict safely (weights_only=True), with one clear message per failure."""
    path = resolve_model_path(model)
    _check_magic(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        if any(s in text for s in ("Weights only load failed", "Unsupported global", "GLOBAL")):
            raise CheckpointError(
                f"refused to load {path}: it holds Python objects, not just tensors "
                "(a pickled module or code); nothing in it was run",
                "re-save it as a state dict: torch.save({'state_dict': model.state_dict()}, path)",
            ) from None
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint ({text.splitlines()[0][:120]})",
            "pass a file written by torch.save or `bsnn train`",
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        first = str(e).splitlines()[0][:160] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path} is truncated or corrupt ({first})",
            "copy or download the checkpoint again",
        ) from None
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint ({type(e).__name__}: {str(e)[:120]})",
            "pass a file written by torch.save or `bsnn train`",
        ) from None
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"state_dict": obj}
    if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
        raise CheckpointError(
            f"{path} holds a {type(obj).__name__}, not a model's state dict",
            "pass a checkpoint with a 'state_dict' entry or a bare state dict",
        )
    return obj


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DataParallel wraps: `features.module.N` (the original) and `module.` (whole model)."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix("module.").replace("features.module.", "features.")
        out[key] = value
    return out


def weight_layers(state: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The conv and linear weights of a state dict, in the model's order."""
    return [v for k, v in state.items()
            if k.endswith("weight") and v.is_floating_point() and v.dim() in (2, 4)]


def _one_magnitude_per_channel(weight: torch.Tensor) -> bool:
    magnitude = weight.detach().abs().flatten(1).double()
    if magnitude.shape[1] < 2:  # one weight per channel: any layer would pass
        return False
    high, low = magnitude.max(dim=1).values, magnitude.min(dim=1).values
    return bool((high - low <= BINARY_RTOL * high).all())


def is_binary_state(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict holds a binary model as deployed: every weighted layer but the first
    and the last has one |w| per output channel (+-alpha), within a relative 1e-6."""
    middle = weight_layers(state)[1:-1]
    return bool(middle) and all(_one_magnitude_per_channel(w) for w in middle)


def has_meta(raw: dict[str, Any]) -> bool:
    """Whether a read checkpoint is ours (with metadata) rather than the original layout."""
    return raw.get("format") == FORMAT


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict(strict) with a message naming the first missing / unexpected keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:3]}")
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:3]}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:2]}")
        raise CheckpointError(
            f"{source} does not fit this architecture: " + "; ".join(parts),
            "check --arch and --dataset (class count) match the checkpoint",
        )
    model.load_state_dict(state, strict=True)


def load_model(
    model: str | os.PathLike[str],
    *,
    arch: str | None = None,
    dataset: str | None = None,
    num_classes: int | None = None,
    input_shape: tuple[int, int, int] | None = None,
    binary: bool | None = None,
    width: float | None = None,
    raw: dict[str, Any] | None = None,
) -> tuple[nn.Module, ModelMeta]:
    """Build the model a checkpoint describes and load its weights (eval mode, CPU).

    Our checkpoints carry their metadata; the original repository's files do not, so the caller
    passes arch / dataset / num_classes / input_shape (the CLI's --arch and --dataset), and
    width (default 1: the original's). Whether such a file is binary is read from its weights
    unless `binary` says. Explicit arguments that contradict the metadata raise. `raw` is the
    already-read file.
    """
    raw = raw if raw is not None else read_checkpoint(model)
    state = _strip_prefixes(raw["state_dict"])
    if has_meta(raw):
        meta = _stored_meta(raw, str(model), arch=arch, dataset=dataset,
                            num_classes=num_classes, width=width)
    else:
        if arch is None or num_classes is None or input_shape is None:
            raise CheckpointError(
                f"{model} has no bsnn metadata",
                "pass --arch and --dataset so the model can be built",
            )
        meta = ModelMeta(arch=arch, dataset=dataset or "", num_classes=num_classes,
                         input_shape=input_shape,
                         binary=is_binary_state(state) if binary is None else binary,
                         source="original layout", width=1.0 if width is None else width)
    net = build_model(meta.arch, meta.num_classes, meta.input_shape, binary=meta.binary,
                      width=meta.width)
    load_state(net, state, str(model))
    net.eval()
    return net, meta


def _stored_meta(raw: dict[str, Any], model: str, *, arch: str | None, dataset: str | None,
                 num_classes: int | None, width: float | None) -> ModelMeta:
    """A bsnn checkpoint's metadata; CheckpointError where an explicit request contradicts it."""
    meta = ModelMeta.from_dict(raw["meta"])
    for name, given, have in (
        ("arch", arch, meta.arch),
        ("dataset", dataset, meta.dataset),
        ("num_classes", num_classes, meta.num_classes),
    ):
        if given is not None and given != have:
            raise CheckpointError(
                f"{model} is a {have} model but {name}={given} was asked for",
                f"drop the {name} option or pass {name}={have}",
            )
    if width is not None and width != meta.width:
        raise CheckpointError(
            f"{model} was built at width {meta.width:g} but width {width:g} was asked for",
            f"drop the width option or pass width={meta.width:g}")
    return meta


def save_checkpoint(
    path: str | os.PathLike[str],
    model: nn.Module,
    meta: ModelMeta,
    train_state: dict[str, Any] | None = None,
) -> None:
    """Write atomically (temp file + rename): a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta.versions = meta.versions or versions()
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": 1,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "meta": meta.to_dict(),
    }
    if train_state is not None:
        payload["train_state"] = train_state
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
