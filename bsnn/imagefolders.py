"""The folder-based data sets (imagefolder, imagenet): class folders scanned into labelled files,
split, ordered, and decoded into a cache.

Kept apart from bsnn.data, which picks a data set by name, because everything here is about image
files on disk: finding them, checking them, holding them in memory once decoded. The per-access
transform ends in the normalisation that bsnn.data passes in, so both modules normalise alike.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from bsnn.errors import ConfigError, DataError

_CACHE_MAX_IMAGES = 100_000  # bigger sets (ImageNet train) are decoded on every access
_CACHE_MAX_BYTES = 4 * 2**30
_IMAGENET_DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"

Transform = Callable[[Tensor], Tensor]


class _ResizeCrop:
    """Shorter side to `resize`, then the central `crop` x `crop`: deterministic, so cacheable."""

    def __init__(self, resize: int, crop: int) -> None:
        self.resize, self.crop = resize, crop

    def __call__(self, img: Tensor) -> Tensor:
        if min(img.shape[-2:]) != self.resize:
            img = F.resize(img, [self.resize], antialias=True)
        return img if img.shape[-2:] == (self.crop, self.crop) else F.center_crop(img, [self.crop])


class ImageFiles(Dataset[tuple[Tensor, int]]):
    """Image files, decoded on first access and kept (after `prep`) when `shape` fits in memory.

    `prep` is the deterministic part of the transforms (resize, centre crop) and must give
    `shape`; `transform` runs on every access. Without `shape`, nothing is kept.
    """

    def __init__(self, samples: list[tuple[str, int]], prep: Transform | None,
                 transform: Transform, shape: tuple[int, int, int] | None) -> None:
        self.samples = samples
        self.labels = [label for _, label in samples]
        self.prep, self.transform = prep, transform
        fits = shape is not None and len(samples) <= _CACHE_MAX_IMAGES and (
            len(samples) * int(np.prod(shape)) <= _CACHE_MAX_BYTES)
        # torch.empty only reserves: pages are touched as images arrive
        self._cache = torch.empty((len(samples), *shape), dtype=torch.uint8) if fits else None
        self._cached = bytearray(len(samples))  # 1: in the cache

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, i: int) -> Tensor:
        img = _decode(self.samples[i][0])
        return img if self.prep is None else self.prep(img)

    def fill(self, indices: Sequence[int]) -> None:
        """Decode `indices` into the cache now (before DataLoader workers fork and share it)."""
        if self._cache is not None:
            for i in indices:
                if not self._cached[i]:
                    self._cache[i] = self._load(i)
                    self._cached[i] = 1

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        if self._cache is None:
            img = self._load(i)
        else:
            self.fill([i])
            img = self._cache[i]
        return self.transform(img), self.labels[i]


def _decode(path: str) -> Tensor:
    """The file as a uint8 RGB (3, H, W) tensor, as ImageFolder reads it; DataError naming it if
    it is not an image. (PIL, not torchvision.io: torchvision's decoders are deprecated.)"""
    try:
        with Image.open(path) as im:
            return F.pil_to_tensor(im.convert("RGB"))
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise DataError(f"cannot decode image {path}: {e}",
                        "replace or delete the file: it is corrupt or not an image") from e


def existing_dir(name: str, data: str | os.PathLike[str] | None) -> Path:
    """`data` as a Path to a folder that exists; DataError if it is None or no folder."""
    if data is None:
        raise DataError(f"{name} needs a data folder", "pass --data DIR")
    path = Path(data).expanduser()
    if not path.is_dir():
        raise DataError(f"data folder {path} does not exist or is not a folder",
                        "check the --data path")
    return path


def _class_names(folder: Path) -> list[str]:
    names = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise DataError(f"{folder} holds no class folders",
                        f"put each class's images in a folder of its own: {folder}/<class>/*.jpg")
    return names


def _scan(folder: Path, classes: list[str]) -> list[tuple[str, int]]:
    """(path, label) of every image in folder/<class>/, sorted; labels index `classes`."""
    names = _class_names(folder)
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DataError(f"{folder} has class folders the training split lacks: "
                        f"{', '.join(unknown[:5])}", "give train/ and val/ the same class folders")
    class_to_idx = {c: i for i, c in enumerate(classes) if c in names}
    samples = make_dataset(str(folder), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    counts = Counter(label for _, label in samples)
    empty = [c for c in names if counts[class_to_idx[c]] == 0]
    if empty:
        raise DataError(f"class folder(s) without images in {folder}: {', '.join(empty[:5])}",
                        f"add images ({' '.join(IMG_EXTENSIONS)}) or remove the folder(s)")
    return samples


def _interleave(samples: list[tuple[str, int]]) -> list[tuple[str, int]]:
    """Round-robin over the classes, so that the first n of a split cover every class."""
    by_class: dict[int, list[tuple[str, int]]] = {}
    for s in samples:
        by_class.setdefault(s[1], []).append(s)
    groups = list(by_class.values())
    return [g[k] for k in range(max(map(len, groups), default=0)) for g in groups if k < len(g)]


def _stratified_part(samples: list[tuple[str, int]], val_split: float, seed: int,
                     split: str) -> list[tuple[str, int]]:
    """Each class's round(n * val_split) images drawn with `seed` are "val"; the rest "train"."""
    g = torch.Generator().manual_seed(seed)
    by_class: dict[int, list[int]] = {}
    for i, (_, label) in enumerate(samples):
        by_class.setdefault(label, []).append(i)
    val: set[int] = set()
    for idx in by_class.values():
        perm = torch.randperm(len(idx), generator=g)[: round(len(idx) * val_split)]
        val.update(idx[j] for j in perm.tolist())
    return [s for i, s in enumerate(samples) if (i in val) == (split == "val")]


def imagefolder(split: str, root: Path, val_split: float | None, seed: int, augment: bool,
                size: int, normalize: Transform) -> tuple[ImageFiles, list[str]]:
    """One split of a folder of class folders (or of its train/ and val/), `size` x `size`,
    and the class names in label order; `normalize` ends every image's transform."""
    train_dir, val_dir = root / "train", root / "val"
    if val_dir.is_dir() and not train_dir.is_dir():
        raise DataError(f"{root} has val/ but no train/",
                        "add train/<class>/ folders beside val/, or point --data at the class "
                        "folders themselves")
    base = train_dir if train_dir.is_dir() else root
    classes = _class_names(base)
    if val_dir.is_dir():
        if val_split is not None:
            raise ConfigError(f"{root} has a val/ folder, so --val-split has nothing to split",
                              f"drop --val-split, or pass --data {train_dir} to split train/")
        samples = _scan(base if split == "train" else val_dir, classes)
    elif val_split is None:
        raise DataError(f"{base} has no val/ folder to evaluate on",
                        "pass --val-split 0.1 to hold out a stratified 10 % of its images")
    else:
        samples = _stratified_part(_scan(base, classes), val_split, seed, split)
        if not samples:
            raise DataError(f"--val-split {val_split} leaves the {split} split of {base} empty",
                            "pick a val split between the two extremes, or add images")
    prep = _ResizeCrop(size, size)
    steps: list[Transform] = [v2.RandomCrop(size, padding=size // 8),
                              v2.RandomHorizontalFlip()] if augment else []
    dataset = ImageFiles(_interleave(samples), prep, v2.Compose([*steps, normalize]),
                         (3, size, size))
    return dataset, classes


def imagenet(split: str, root: Path, augment: bool,
             normalize: Transform) -> tuple[ImageFiles, list[str]]:
    """One split of ImageNet at 224 x 224 (train/ and val/ of class folders, or torchvision's
    layout) and the class names in label order; `normalize` ends every image's transform."""
    if (root / "meta.bin").is_file() or (root / _IMAGENET_DEVKIT).is_file():
        try:  # torchvision's layout: it unpacks the archives and knows the class names
            ds = torchvision.datasets.ImageNet(str(root), split=split)
        except (RuntimeError, OSError) as e:
            raise DataError(f"torchvision could not read ImageNet in {root}: {e}",
                            f"put {_IMAGENET_DEVKIT} and ILSVRC2012_img_{split}.tar in {root}, "
                            f"or a {split}/<wnid>/ folder per class") from e
        samples, classes = list(ds.samples), [names[0] for names in ds.classes]
    else:
        folder = root / split
        if not folder.is_dir():
            raise DataError(f"imagenet: {root} has no {split}/ folder",
                            f"lay it out as {root}/train/<wnid>/*.JPEG and {root}/val/<wnid>/"
                            f"*.JPEG, or put {_IMAGENET_DEVKIT} and the ILSVRC2012 archives there")
        classes = _class_names(root / "train" if (root / "train").is_dir() else folder)
        samples = _scan(folder, classes)
    if augment:
        prep, shape = None, None  # random crops need the whole image: nothing to keep
        steps: list[Transform] = [v2.RandomResizedCrop(224, antialias=True),
                                  v2.RandomHorizontalFlip()]
    else:
        prep = _ResizeCrop(256, 224)
        shape, steps = (3, 224, 224), []
    dataset = ImageFiles(_interleave(samples), prep, v2.Compose([*steps, normalize]), shape)
    return dataset, classes
