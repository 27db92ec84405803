"""Data sets by name: each split is a Dataset of (normalised float32 CxHxW tensor, int label).

Images are decoded once and kept as uint8 tensors where they fit in memory, because on the small
CPUs this project trains on, decoding JPEGs every epoch would cost more than the model; what is left
per item is a crop, a flip and a normalisation of a small tensor. Evaluation transforms are
deterministic so the ANN and its SNN are measured on identical inputs.

The folder-based sets (imagefolder, imagenet) read their files through bsnn.imagefolders.
torchvision (about 2 s to import, more than a small sweep cell's work) is imported only by the
sets that need it: CIFAR and the folder-based ones, not digits.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from bsnn.checks import parse_normalize
from bsnn.errors import ConfigError, DataError
from bsnn.options import DATASETS

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
_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py",
                (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")),
    "cifar100": ("cifar-100-python", ("train", "test", "meta")),
}

Stats = tuple[tuple[float, ...], tuple[float, ...]]
Transform = Callable[[Tensor], Tensor]
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


class _InMemory(Dataset[tuple[Tensor, int]]):
    """Images held as one (N, C, H, W) tensor; `transform` makes each the model's input."""

    def __init__(self, images: Tensor, labels: list[int], transform: Transform) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self.transform(self.images[i]), self.labels[i]


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
    `seed`. `augment` applies the training transform (random crops and flips; digits has none):
    asked for "train" by training, and for "val" only by the original's protocol (bsnn's own
    evaluation is deterministic). `image_size` is imagefolder's side (default 32); the others
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
    stats = normalization(name, normalize)
    if name in ("imagefolder", "imagenet"):
        return _folders(name, split, data, val_split, seed, augment, image_size, stats)
    if val_split is not None:
        raise ConfigError(f"{name} has a fixed validation split; --val-split is for imagefolder",
                          "drop --val-split")
    native = {"digits": 8, "cifar10": 32, "cifar100": 32}[name]
    if image_size not in (None, native):
        raise ConfigError(f"{name} images are {native}x{native}, not {image_size}x{image_size}",
                          "drop --image-size (it is for imagefolder)")
    if name == "digits":
        return _digits(split, stats)
    return _cifar(name, split, DEFAULT_DATA_DIR if data is None else Path(data), download,
                  augment, stats)


def _folders(name: str, split: str, data: str | os.PathLike[str] | None,
             val_split: float | None, seed: int, augment: bool, image_size: int | None,
             stats: Stats) -> tuple[Dataset[tuple[Tensor, int]], DatasetInfo]:
    """imagefolder or imagenet, read through bsnn.imagefolders."""
    from bsnn.imagefolders import existing_dir, imagefolder, imagenet

    if name == "imagefolder":
        size = 32 if image_size is None else image_size
        if size < 1:
            raise ConfigError(f"image size {size} must be positive", "pass e.g. --image-size 32")
        dataset, classes = imagefolder(split, existing_dir(name, data), val_split, seed, augment,
                                       size, _Normalize(*stats))
        return dataset, DatasetInfo(name, len(classes), (3, size, size), *stats, tuple(classes))
    if val_split is not None:
        raise ConfigError(f"{name} has a fixed validation split; --val-split is for imagefolder",
                          "drop --val-split")
    if image_size not in (None, 224):
        raise ConfigError(f"{name} images are 224x224, not {image_size}x{image_size}",
                          "drop --image-size (it is for imagefolder)")
    dataset, classes = imagenet(split, existing_dir(name, data), augment, _Normalize(*stats))
    return dataset, DatasetInfo(name, len(classes), (3, 224, 224), *stats, tuple(classes))


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
    from torchvision.datasets import CIFAR10, CIFAR100
    from torchvision.transforms import v2

    cls = CIFAR10 if name == "cifar10" else CIFAR100
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
    return _InMemory(images, labels, v2.Compose([*steps, _Normalize(*stats)])), info


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
    fill = getattr(dataset, "fill", None)  # bsnn.imagefolders' sets decode into a cache
    if callable(fill):
        fill(indices)


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
