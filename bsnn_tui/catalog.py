"""What the setup form can offer beyond the table of run options: models, architectures and
devices found on this machine, and a model's metadata. (Choices the table knows, data sets
included, come from bsnn.options at once.)

Everything here that needs torch imports it inside the function: these run in worker threads
after the first screen has painted, never at import time (see tests/test_tui.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ORIGINAL_LAYOUT = "original layout"  # describe_model's `source` for files without metadata
# Folders that never hold a user's checkpoint but can be huge.
SKIP_DIRS = {".git", "__pycache__", "node_modules", ".venv", "venv", "site-packages", "data"}


@dataclass
class Catalog:
    """The choices found on this machine, loaded once after the first paint."""

    models: list[str] = field(default_factory=list)
    archs: list[str] = field(default_factory=list)
    devices: list[tuple[str, str]] = field(default_factory=list)  # (label, value)


def find_checkpoints(root: Path, max_depth: int = 2, limit: int = 50) -> list[str]:
    """`*.pt` files under `root`, at most `max_depth` folders down and `limit` files: a large
    working directory must not stall the form."""
    found: list[str] = []
    root = Path(root)
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        if depth >= max_depth:
            dirs.clear()
        for name in sorted(files):
            if name.endswith(".pt"):
                found.append(str(Path(folder, name).relative_to(root)))
                if len(found) >= limit:
                    return found
    return found


def devices() -> list[tuple[str, str]]:
    """auto, cpu and each CUDA device torch can see (imports torch: call from a worker)."""
    import torch

    found = [("auto", "auto"), ("cpu", "cpu")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            found.append((f"cuda:{i} {torch.cuda.get_device_name(i)}", f"cuda:{i}"))
    return found


def discover(root: Path) -> Catalog:
    """Bundled and nearby checkpoints, architectures and devices (imports torch)."""
    from bsnn.checkpoint import bundled_names
    from bsnn.models.registry import ARCHS

    return Catalog(
        models=bundled_names() + find_checkpoints(root),
        archs=sorted(ARCHS),
        devices=devices(),
    )


def describe_model(model: str) -> dict[str, Any]:
    """The checkpoint's metadata (arch, dataset, binary, width, ann_accuracy...); for a file in
    the original repository's layout, which carries none, what its weights tell: `source`
    "original layout" and whether it is binary. Raises CheckpointError."""
    from bsnn.checkpoint import has_meta, is_binary_state, read_checkpoint

    raw = read_checkpoint(model)
    if has_meta(raw):
        return dict(raw["meta"])
    return {"source": ORIGINAL_LAYOUT, "binary": is_binary_state(raw["state_dict"])}
