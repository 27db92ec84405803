"""Data sets by name: each split is a Dataset of (normalised float32 CxHxW tensor, int label).

Images are decoded once and kept as uint8 tensors where they fit in memory, because on the small
CPUs this project trains on, decoding JPEGs every epoch would cost more than the model; what is left
per item is a crop, a flip and a normalisation of a small tensor. Evaluation transforms are
deterministic so the ANN and its SNN are measured on identical inputs.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from bsnn.errors import ConfigError, DataError
from bsnn.options import DATASETS, parse_normalize

SPLITS: tuple[str, ...] = ("train", "val")

# Mean and (population) std of all pixels/16 of the 1,437 digits training images, i.e.
# train_test_split(load_digits().images, test_size=0.2, random_state=0, stratify=target)[0] / 16.
DIGITS_MEAN, DIGITS_STD = (0.3054,), (0.3761,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.507, 0.487, 0.441), (0.267, 0.256, 0.276)  # the original repo's
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
# Each data set's own statistics (also what --normalize NAME means); imagefolder uses ImageNet's.
STATISTICS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "digits": (DIGITS_MEAN, DIGITS_STD), "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD), "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
    "imagefolder": (IMAGENET_MEAN, IMAGENET_STD),
}
CHANNELS = {"digits": 1, "cifar10": 3, "cifar100": 3, "imagenet": 3, "imagefolder": 3}

DEFAULT_DATA_DIR = Path("data")  # where CIFAR is looked for (and downloaded to) without `data`
_CACHE_MAX_IMAGES = 100_000  # bigger sets (ImageNet train) are decoded on every access
_CACHE_MAX_BYTES = 4 * 2**30
_IMAGENET_DEVKIT = "ILSVRC2012_devkit_t12.tar.gz"
_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py",
                (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
}

Transform = Callable[[Tensor], Tensor]
Stats = tuple[tuple[float, ...], tuple[float, ...]]
Normalization = str | tuple[Sequence[float], Sequence[float]] | None


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a data set."""

    name: str
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W) as the model sees it
    mean: tuple[float, ...]  # normalisation used
    std: tuple[float, ...]
    classes: tuple[str, ...]  # class names in label order


class _Normalize:
    """uint8 (0-255) or float (0-1) image -> float32, per channel (x - mean) / std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, img: Tensor) -> Tensor:
        x = img.float() / 255 if img.dtype == torch.uint8 else img.float()
        return (x - self.mean) / self.std


class _ResizeCrop:
    """Shorter side to `resize`, then the central `crop` x `crop`: deterministic, so cacheable."""

    def __init__(self, resize: int, crop: int) -> None:
        self.resize, self.crop = resize, crop

    def __call__(self, img: Tensor) -> Tensor:
        if min(img.shape[-2:]) != self.resize:
            img = F.resize(img, [self.resize], antialias=True)
        return img if img.shape[-2:] == (self.crop, self.crop) else F.center_crop(img, [self.crop])


def _pipeline(steps: list[Transform], mean: Sequence[float], std: Sequence[float]) -> Transform:
    return v2.Compose([*steps, _Normalize(mean, std)])


class _InMemory(Dataset[tuple[Tensor, int]]):
    """Images held as one (N, C, H, W) tensor; `transform` makes each the model's input."""

    def __init__(self, images: Tensor, labels: list[int], transform: Transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.transform(self.images[i]), self.labels[i]


class _ImageFiles(Dataset[tuple[Tensor, int]]):
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


def normalization(name: str, normalize: Normalization = None) -> Stats:
    """The (mean, std) a data set's images are normalised with: its own statistics, or those
    `normalize` gives (bsnn.options.parse_normalize's text, or a (mean, std) pair such as a
    checkpoint records). One value stands for every channel."""
    if normalize is None:
        return STATISTICS[name]
    given = parse_normalize(normalize) if isinstance(normalize, str) else normalize
    mean, std = STATISTICS[given] if isinstance(given, str) else given
    channels = CHANNELS[name]
    if len(mean) not in (1, channels) or len(std) != len(mean):
        raise ConfigError(f"normalize {_text(normalize)} gives {len(mean)} mean(s) and "
                          f"{len(std)} std(s); {name} images have {channels} channel(s)",
                          f"pass --normalize MEAN,STD or one value per channel ({channels})")
    repeat = channels // len(mean)  # one value for every channel, or one each
    return tuple(float(v) for v in mean) * repeat, tuple(float(v) for v in std) * repeat


def _text(normalize: Normalization) -> str:
    if isinstance(normalize, str):
        return repr(normalize)
    mean, std = normalize  # type: ignore[misc]
    return f"{list(mean)}/{list(std)}"


def load_split(name: str, split: str, data: str | os.PathLike[str] | None = None, *,
               val_split: float | None = None, seed: int = 0, download: bool = False,
               augment: bool = False, image_size: int | None = None,
               normalize: Normalization = None,
               ) -> tuple[Dataset[tuple[Tensor, int]], DatasetInfo]:
    """One split ("train" or "val") of a data set in DATASETS, and its info.

    `data` is the data set's folder: ignored by digits; for CIFAR the folder holding
    cifar-10-batches-py/ or cifar-100-python/ (default ./data); for imagenet DIR/train and
    DIR/val of class folders, or torchvision's ImageNet layout (meta.bin or the devkit archive);
    for imagefolder a folder of class folders, or one with train/ and val/ of them.
    `val_split` (imagefolder without val/ only) holds out that stratified fraction, drawn with
    `seed`. `augment` applies to the train split only (random crops and flips; digits has none):
    "val" is always deterministic. `image_size` is imagefolder's side (default 32); the others
    have a fixed size. imagefolder is normalised with ImageNet's mean/std: constants keep a model
    valid when images are added to its folder, and fit natural images. `normalize` replaces a
    data set's statistics (see `normalization`): the authors' binary CIFAR-100 model was
    trained with ImageNet's.
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}", f"use one of: {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}", f"use one of: {', '.join(SPLITS)}")
    if val_split is not None and not 0 < val_split < 1:
        raise ConfigError(f"val_split {val_split} is outside (0, 1)",
                          "pass a fraction such as --val-split 0.1")
    augment = augment and split == "train"
    stats = normalization(name, normalize)
    if name == "imagefolder":
        size = 32 if image_size is None else image_size
        if size < 1:
            raise ConfigError(f"image size {size} must be positive", "pass e.g. --image-size 32")
        return _imagefolder(split, _existing_dir(name, data), val_split, seed, augment, size,
                            stats)
    if val_split is not None:
        raise ConfigError(f"{name} has a fixed validation split; --val-split is for imagefolder",
                          "drop --val-split")
    native = {"digits": 8, "cifar10": 32, "cifar100": 32, "imagenet": 224}[name]
    if image_size not in (None, native):
        raise ConfigError(f"{name} images are {native}x{native}, not {image_size}x{image_size}",
                          "drop --image-size (it is for imagefolder)")
    if name == "digits":
        return _digits(split, stats)
    if name == "imagenet":
        return _imagenet(split, _existing_dir(name, data), augment, stats)
    return _cifar(name, split, DEFAULT_DATA_DIR if data is None else Path(data), download,
                  augment, stats)


def _digits(split: str, stats: Stats) -> tuple[Dataset[tuple[Tensor, int]], DatasetInfo]:
    from sklearn.datasets import load_digits  # sklearn costs ~0.5 s to import: only when used
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    train_idx, val_idx = train_test_split(np.arange(len(digits.target)), test_size=0.2,
                                          random_state=0, stratify=digits.target)
    chosen = train_idx if split == "train" else val_idx
    images = torch.from_numpy(digits.images[chosen] / 16).float().unsqueeze(1)
    labels = [int(y) for y in digits.target[chosen]]
    info = DatasetInfo("digits", 10, (1, 8, 8), *stats, tuple(str(d) for d in range(10)))
    return _InMemory(images, labels, _Normalize(*stats)), info


def _cifar(name: str, split: str, root: Path, download: bool, augment: bool,
           stats: Stats) -> tuple[Dataset[tuple[Tensor, int]], DatasetInfo]:
    folder_name, files = _CIFAR_FILES[name]
    root = root.expanduser().absolute()
    if root.name == folder_name:  # pointed at cifar-100-python/ itself: take what was meant
        root = root.parent
    folder = root / folder_name
    fix = (f"pass --data DIR naming the folder that holds {folder_name}/, or download=True "
           "(the CLI's --download) on a machine with internet")
    missing = [f for f in files if not (folder / f).is_file()]
    if missing and not download:
        raise DataError(f"{name} not found: {folder} lacks {', '.join(missing)}", fix)
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        ds = cls(str(root), train=split == "train", download=download)
    except RuntimeError as e:  # torchvision's md5 check failed
        raise DataError(f"{name} files in {folder} are corrupt or incomplete (checksum mismatch)",
                        f"delete {folder} and download it again") from e
    except OSError as e:  # download or read failed
        raise DataError(f"could not get {name} into {root}: {e}", fix) from e
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    steps: list[Transform] = [v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()] if augment \
        else []
    info = DatasetInfo(name, len(ds.classes), (3, 32, 32), *stats, tuple(ds.classes))
    labels = [int(t) for t in ds.targets]
    return _InMemory(images, labels, _pipeline(steps, *stats)), info


def _existing_dir(name: str, data: str | os.PathLike[str] | None) -> Path:
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


def _imagefolder(split: str, root: Path, val_split: float | None, seed: int, augment: bool,
                 size: int, stats: Stats) -> tuple[Dataset[tuple[Tensor, int]], DatasetInfo]:
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
    dataset = _ImageFiles(_interleave(samples), prep, _pipeline(steps, *stats), (3, size, size))
    info = DatasetInfo("imagefolder", len(classes), (3, size, size), *stats, tuple(classes))
    return dataset, info


def _imagenet(split: str, root: Path, augment: bool,
              stats: Stats) -> tuple[Dataset[tuple[Tensor, int]], DatasetInfo]:
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
    dataset = _ImageFiles(_interleave(samples), prep, _pipeline(steps, *stats), shape)
    info = DatasetInfo("imagenet", len(classes), (3, 224, 224), *stats, tuple(classes))
    return dataset, info


def calibration_subset(dataset: Dataset[tuple[Tensor, int]], n: int,
                       seed: int = 0) -> Dataset[tuple[Tensor, int]]:
    """`n` images drawn at random with `seed`, without replacement (the whole set if n is larger).

    Used for both calibrations: the images the thresholds are set from (--norm) and those of
    the SNN calibration (--snn-calibration-size). Never the first n: class-sorted sets would
    give one or two classes. Pass a train split loaded without augment, so the calibration
    sees what evaluation will.
    """
    if n < 1:
        raise ConfigError(f"calibration size {n} must be positive",
                          "pass a positive number of images, e.g. --norm 256")
    if n >= len(dataset):  # type: ignore[arg-type]
        return dataset
    g = torch.Generator().manual_seed(seed)
    return Subset(dataset, torch.randperm(len(dataset), generator=g)[:n].tolist())  # type: ignore[arg-type]


def eval_subset(dataset: Dataset[tuple[Tensor, int]],
                n: int | None) -> Dataset[tuple[Tensor, int]]:
    """The first `n` images in the split's fixed order (None, -1 or more than there are: all).

    Folder-based splits are ordered round-robin over classes, so the first n cover every class.
    """
    if n is None or n == -1 or n >= len(dataset):  # type: ignore[arg-type]
        return dataset
    if n < 1:
        raise ConfigError(f"eval size {n} must be positive or -1 (all)",
                          "pass e.g. --eval-size 500")
    return Subset(dataset, list(range(n)))


def _fill_caches(dataset: Dataset[tuple[Tensor, int]]) -> None:
    indices: Sequence[int] = range(len(dataset))  # type: ignore[arg-type]
    while isinstance(dataset, Subset):
        indices = [dataset.indices[i] for i in indices]
        dataset = dataset.dataset
    if isinstance(dataset, _ImageFiles):
        dataset.fill(indices)


def make_loader(dataset: Dataset[tuple[Tensor, int]], batch_size: int, *, shuffle: bool = False,
                n_workers: int = 0, pin_memory: bool = False, seed: int = 0) -> DataLoader:
    """Batches in the dataset's order, or shuffled by a generator seeded with `seed`.

    With workers, cached images are decoded here first: each worker would otherwise fill, and
    lose at the epoch's end, a private copy of the cache.
    """
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size} must be positive", "pass e.g. --batch-size 64")
    if n_workers < 0:
        raise ConfigError(f"{n_workers} data workers", "pass --workers 0 or more")
    if n_workers > 0:
        _fill_caches(dataset)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=n_workers,
                      pin_memory=pin_memory, generator=torch.Generator().manual_seed(seed))
