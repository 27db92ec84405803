"""Tiny data sets written in the real on-disk formats, so tests run the real parsers offline.

CIFAR batches are pickled the way the official archives were (by Python 2: protocol 2, keys and
names as Python 2 `str`, the image array via `numpy.core.multiarray._reconstruct`), because
torchvision unpickles them with `encoding="latin1"` and looks the keys up as `str`; a Python 3
pickle with `bytes` keys would fail there, while a `str`-keyed one would pass a test the real files
could fail.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from PIL import Image

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
_NUMPY_RECONSTRUCT = np.zeros(0).__reduce_ex__(2)[0]


class _Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes `bytes` as Python 2 `str` (BINSTRING) and numpy's reconstructor under its old name."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if obj is _NUMPY_RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _dump_py2(path: Path, obj: dict[bytes, Any]) -> None:
    with path.open("wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _images(n: int, rng: np.random.Generator) -> np.ndarray:
    """n random CIFAR rows: uint8, 3072 = 1024 red, then 1024 green, then 1024 blue, row-major."""
    return rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)


def write_cifar10(root: Path, n_per_batch: int = 4, n_test: int = 6, seed: int = 0) -> Path:
    """cifar-10-batches-py/ with data_batch_1..5, test_batch and batches.meta under `root`."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = [(f"data_batch_{i}", n_per_batch, f"training batch {i} of 5") for i in range(1, 6)]
    for name, n, label in [*batches, ("test_batch", n_test, "testing batch 1 of 1")]:
        labels = [int(x) for x in rng.integers(0, 10, size=n)]
        _dump_py2(folder / name, {
            b"batch_label": label.encode(),
            b"labels": labels,
            b"data": _images(n, rng),
            b"filenames": [f"img_{name}_{i}.png".encode() for i in range(n)],
        })  # fmt: skip
    _dump_py2(folder / "batches.meta", {
        b"num_cases_per_batch": n_per_batch,
        b"label_names": [c.encode() for c in CIFAR10_CLASSES],
        b"num_vis": 3072,
    })  # fmt: skip
    return folder


def write_cifar100(root: Path, n_train: int = 12, n_test: int = 8, seed: int = 0) -> Path:
    """cifar-100-python/ with train, test and meta under `root`."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", n_train), ("test", n_test)):
        fine = [int(x) for x in rng.integers(0, 100, size=n)]
        _dump_py2(folder / name, {
            b"filenames": [f"img_{name}_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{name}ing batch 1 of 1".encode(),
            b"fine_labels": fine,
            b"coarse_labels": [x // 5 for x in fine],
            b"data": _images(n, rng),
        })  # fmt: skip
    _dump_py2(folder / "meta", {
        b"fine_label_names": [f"fine_{i:02d}".encode() for i in range(100)],
        b"coarse_label_names": [f"coarse_{i:02d}".encode() for i in range(20)],
    })  # fmt: skip
    return folder


def skip_cifar_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make torchvision's CIFAR loader check only that its files exist, not their md5.

    The md5s pin the official 160 MB archives, which no tiny fixture can match. Only the checksum
    comparison is dropped: torchvision still requires every file it lists, and its own code opens,
    unpickles and reshapes them.
    """
    real = torchvision.datasets.cifar.check_integrity
    monkeypatch.setattr(
        torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: real(fpath, None)
    )


def write_image(path: Path, size: tuple[int, int], color: Sequence[int] | None = None,
                seed: int = 0) -> None:
    """One RGB image (random noise, or a constant `color`) in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if color is None:
        pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), np.uint8)
    else:
        pixels = np.broadcast_to(np.asarray(color, np.uint8), (size[1], size[0], 3))
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, quality=95)


def write_image_folder(root: Path, counts: dict[str, int], size: tuple[int, int] = (40, 36),
                       suffix: str = ".jpg") -> Path:
    """root/<class>/<nnnn><suffix>, `counts[class]` random images per class."""
    for k, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(root / name / f"{i:04d}{suffix}", size, seed=1000 * k + i)
    return root


def write_imagenet_meta(root: Path, wnids: Sequence[str]) -> None:
    """meta.bin as torchvision's ImageNet writes it after parsing the devkit archive."""
    names = {w: (f"name of {w}", f"alias of {w}") for w in wnids}
    torch.save((names, []), root / "meta.bin")
