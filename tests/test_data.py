"""bsnn.data on tiny data sets in the real on-disk formats, plus the real cifar10-2k if present."""

from __future__ import annotations

import pickle
import urllib.error
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar
from fixtures_data import (
    CIFAR10_CLASSES,
    skip_cifar_md5,
    write_cifar10,
    write_cifar100,
    write_image,
    write_image_folder,
    write_imagenet_meta,
)
from torch import Tensor

from bsnn.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    calibration_subset,
    eval_subset,
    load_split,
    make_loader,
)
from bsnn.errors import ConfigError, DataError

REAL_CIFAR10_2K = Path(__file__).parents[2] / "shared/data/cifar10-2k/train"


def _normalised(pixels: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    """Expected model input for a uint8 CxHxW array."""
    x = torch.from_numpy(pixels.astype(np.float32) / 255)
    return (x - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)


def _labels(dataset: torch.utils.data.Dataset) -> list[int]:
    return [dataset[i][1] for i in range(len(dataset))]


def _paths(dataset: torch.utils.data.Dataset) -> list[str]:
    return [path for path, _ in dataset.samples]


@pytest.fixture
def cifar_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_cifar10(tmp_path)
    write_cifar100(tmp_path)
    skip_cifar_md5(monkeypatch)
    return tmp_path


@pytest.fixture
def folder3(tmp_path: Path) -> Path:
    """A plain image folder without val/: classes of 10, 20 and 30 images, not square."""
    return write_image_folder(tmp_path / "imgs", {"ant": 10, "bee": 20, "cow": 30})


@pytest.fixture
def imagenet_root(tmp_path: Path) -> Path:
    root = tmp_path / "imagenet"
    write_image_folder(root / "train", {"n01": 3, "n02": 2, "n03": 2}, size=(300, 260))
    write_image_folder(root / "val", {"n01": 2, "n02": 2, "n03": 1}, size=(260, 300))
    return root


# --- digits ---------------------------------------------------------------------------------

def test_digits_fixed_stratified_split_normalised() -> None:
    train, info = load_split("digits", "train")
    val, _ = load_split("digits", "val", seed=123, data="/ignored")
    val_again, _ = load_split("digits", "val")
    assert (len(train), len(val)) == (1437, 360)
    assert info.num_classes == 10 and info.input_shape == (1, 8, 8)
    assert info.classes == tuple("0123456789")
    assert max(Counter(_labels(val)).values()) - min(Counter(_labels(val)).values()) <= 2
    x, y = val[0]
    assert x.shape == (1, 8, 8) and x.dtype == torch.float32 and type(y) is int
    assert all(torch.equal(val[i][0], val_again[i][0]) for i in range(len(val)))
    everything = torch.stack([train[i][0] for i in range(len(train))])
    assert abs(everything.mean().item()) < 1e-3 and abs(everything.std().item() - 1) < 1e-3
    train_rows = {tuple(train[i][0].flatten().tolist()) for i in range(len(train))}
    val_rows = [tuple(val[i][0].flatten().tolist()) for i in range(len(val))]
    assert sum(r in train_rows for r in val_rows) < 10  # a few digits images are duplicates


# --- CIFAR ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "folder", "val_file", "label_key", "mean", "std"), [
    ("cifar10", "cifar-10-batches-py", "test_batch", b"labels", CIFAR10_MEAN, CIFAR10_STD),
    ("cifar100", "cifar-100-python", "test", b"fine_labels", CIFAR100_MEAN, CIFAR100_STD),
])
def test_cifar_reads_official_pickles(cifar_root: Path, name: str, folder: str, val_file: str,
                                      label_key: bytes, mean: tuple[float, ...],
                                      std: tuple[float, ...]) -> None:
    train, info = load_split(name, "train", cifar_root)
    val, _ = load_split(name, "val", cifar_root)
    with (cifar_root / folder / val_file).open("rb") as f:
        raw = pickle.load(f, encoding="bytes")
    assert (len(train), len(val)) == ((20, 6) if name == "cifar10" else (12, 8))
    assert info.num_classes == (10 if name == "cifar10" else 100)
    assert info.input_shape == (3, 32, 32) and (info.mean, info.std) == (mean, std)
    assert info.classes[:2] == (("airplane", "automobile") if name == "cifar10"
                                else ("fine_00", "fine_01"))
    assert _labels(val) == raw[label_key]
    x, y = val[3]
    expected = _normalised(raw[b"data"][3].reshape(3, 32, 32), mean, std)  # R, G, B planes
    assert type(y) is int and x.dtype == torch.float32
    assert torch.allclose(x, expected, atol=1e-6)
    assert torch.equal(val[3][0], x)


@pytest.mark.parametrize(("normalize", "mean", "std"), [
    ("imagenet", IMAGENET_MEAN, IMAGENET_STD),  # the authors' binary CIFAR-100 model's
    ("0.5,0.25", (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)),
    ("0.1,0.2,0.3/0.4,0.5,0.6", (0.1, 0.2, 0.3), (0.4, 0.5, 0.6)),
    (((0.1,), (0.2,)), (0.1, 0.1, 0.1), (0.2, 0.2, 0.2)),  # as a checkpoint records it
])
def test_normalize_overrides_the_data_sets_statistics(
        cifar_root: Path, normalize: str | tuple[tuple[float, ...], tuple[float, ...]],
        mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    for split, file in (("train", "train"), ("val", "test")):  # bsnn train's split too
        with (cifar_root / "cifar-100-python" / file).open("rb") as f:
            raw = pickle.load(f, encoding="bytes")
        data, info = load_split("cifar100", split, cifar_root, normalize=normalize)
        assert info.mean == pytest.approx(mean) and info.std == pytest.approx(std)
        expected = _normalised(raw[b"data"][3].reshape(3, 32, 32), mean, std)
        assert torch.allclose(data[3][0], expected, atol=1e-6)


def test_normalize_must_fit_the_channels() -> None:
    val, info = load_split("digits", "val", normalize="0.5,0.25")
    assert (info.mean, info.std) == ((0.5,), (0.25,))
    raw, _ = load_split("digits", "val", normalize="0,1")  # no normalisation: pixels / 16
    assert torch.allclose(val[0][0], (raw[0][0] - 0.5) / 0.25, atol=1e-6)
    with pytest.raises(ConfigError, match="digits images have 1 channel") as err:
        load_split("digits", "val", normalize="imagenet")
    assert "--normalize" in err.value.fix
    with pytest.raises(ConfigError, match="MEAN,STD"):
        load_split("digits", "val", normalize="bright")


def test_cifar_accepts_the_inner_folder(cifar_root: Path) -> None:
    val, info = load_split("cifar100", "val", cifar_root / "cifar-100-python")
    assert len(val) == 8 and info.num_classes == 100


def test_cifar_augment_is_random_only_where_asked(cifar_root: Path) -> None:
    """Training asks it of "train"; only the original's protocol asks it of "val"."""
    train, _ = load_split("cifar10", "train", cifar_root, augment=True)
    val, _ = load_split("cifar10", "val", cifar_root)
    torch.manual_seed(0)
    draws = [train[0][0] for _ in range(10)]
    assert all(d.shape == (3, 32, 32) for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    assert all(torch.equal(val[0][0], val[0][0]) for _ in range(5))


def test_cifar_missing_files_name_the_path_and_fix(tmp_path: Path, cifar_root: Path) -> None:
    with pytest.raises(DataError) as err:
        load_split("cifar100", "train", tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "cifar-100-python") in err.value.message
    assert "--data" in err.value.fix and "--download" in err.value.fix
    (cifar_root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError, match="data_batch_3"):
        load_split("cifar10", "val", cifar_root)


def test_cifar_default_folder_is_data_in_cwd(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match=str(tmp_path / "data" / "cifar-10-batches-py")):
        load_split("cifar10", "val")


def test_cifar_checksum_mismatch_is_a_data_error(tmp_path: Path) -> None:
    write_cifar10(tmp_path)  # the real md5 check runs: tiny files cannot match it
    with pytest.raises(DataError, match="checksum") as err:
        load_split("cifar10", "val", tmp_path)
    assert "download it again" in err.value.fix


def test_cifar_failed_download_is_a_data_error(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets.cifar, "download_and_extract_archive", no_network)
    with pytest.raises(DataError, match="no network"):
        load_split("cifar100", "train", tmp_path, download=True)


# --- imagefolder ----------------------------------------------------------------------------

def test_imagefolder_carves_a_disjoint_stratified_val_split(folder3: Path) -> None:
    train, info = load_split("imagefolder", "train", folder3, val_split=0.2, seed=1)
    val, _ = load_split("imagefolder", "val", folder3, val_split=0.2, seed=1)
    assert info.classes == ("ant", "bee", "cow") and info.num_classes == 3
    assert info.input_shape == (3, 32, 32) and (info.mean, info.std) == (IMAGENET_MEAN,
                                                                          IMAGENET_STD)
    assert Counter(_labels(val)) == {0: 2, 1: 4, 2: 6}
    assert Counter(_labels(train)) == {0: 8, 1: 16, 2: 24}
    assert not set(_paths(train)) & set(_paths(val))
    assert len(set(_paths(train)) | set(_paths(val))) == 60
    again, _ = load_split("imagefolder", "val", folder3, val_split=0.2, seed=1)
    other, _ = load_split("imagefolder", "val", folder3, val_split=0.2, seed=2)
    assert _paths(again) == _paths(val) and set(_paths(other)) != set(_paths(val))


def test_imagefolder_uses_train_and_val_folders(imagenet_root: Path) -> None:
    train, info = load_split("imagefolder", "train", imagenet_root, image_size=16)
    val, _ = load_split("imagefolder", "val", imagenet_root, image_size=16)
    assert (len(train), len(val)) == (7, 5)
    assert info.classes == ("n01", "n02", "n03") and info.input_shape == (3, 16, 16)
    assert all(val[i][0].shape == (3, 16, 16) for i in range(len(val)))
    assert all(p.startswith(str(imagenet_root / "val")) for p in _paths(val))


def test_imagefolder_train_only_tree_is_split(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "train", {"a": 4, "b": 4})
    val, info = load_split("imagefolder", "val", tmp_path, val_split=0.25)
    assert info.classes == ("a", "b") and Counter(_labels(val)) == {0: 1, 1: 1}


def test_folder_splits_are_ordered_round_robin_and_eval_subset_takes_the_first(
        folder3: Path) -> None:
    val, _ = load_split("imagefolder", "val", folder3, val_split=0.5)
    assert _labels(val)[:7] == [0, 1, 2, 0, 1, 2, 0]
    first = eval_subset(val, 4)
    assert len(first) == 4
    assert all(torch.equal(first[i][0], val[i][0]) for i in range(4))
    assert [first[i][1] for i in range(4)] == _labels(val)[:4]
    assert eval_subset(val, None) is val and eval_subset(val, -1) is val
    assert eval_subset(val, 10_000) is val
    with pytest.raises(ConfigError):
        eval_subset(val, 0)


def test_imagefolder_normalises_a_constant_image(tmp_path: Path) -> None:
    colour = (200, 100, 50)
    for cls in ("a", "b"):
        for i in range(2):
            write_image(tmp_path / cls / f"{i}.png", (20, 12), color=colour)
    train, _ = load_split("imagefolder", "train", tmp_path, val_split=0.5, image_size=8)
    x, _ = train[0]
    expected = _normalised(np.full((3, 8, 8), 0, np.uint8) + np.array(colour, np.uint8)
                           .reshape(3, 1, 1), IMAGENET_MEAN, IMAGENET_STD)
    assert x.shape == (3, 8, 8) and torch.allclose(x, expected, atol=1e-5)


def test_imagefolder_eval_is_deterministic_and_augment_random(folder3: Path) -> None:
    val, _ = load_split("imagefolder", "val", folder3, val_split=0.2)
    assert torch.equal(val[1][0], val[1][0])
    train, _ = load_split("imagefolder", "train", folder3, val_split=0.2, augment=True)
    torch.manual_seed(0)
    draws = [train[1][0] for _ in range(10)]
    assert all(d.shape == (3, 32, 32) for d in draws)
    assert any(not torch.equal(draws[0], d) for d in draws[1:])


def test_imagefolder_decodes_pil_only_formats(tmp_path: Path) -> None:
    for cls in ("a", "b"):
        write_image(tmp_path / cls / "0.bmp", (10, 10), color=(255, 0, 0))
        write_image(tmp_path / cls / "1.bmp", (10, 10), color=(255, 0, 0))
    train, _ = load_split("imagefolder", "train", tmp_path, val_split=0.5, image_size=10)
    red = _normalised(np.zeros((3, 10, 10), np.uint8) + np.array((255, 0, 0), np.uint8)
                      .reshape(3, 1, 1), IMAGENET_MEAN, IMAGENET_STD)
    assert len(train) == 2
    for i in range(len(train)):
        assert torch.allclose(train[i][0], red, atol=1e-5)


# --- imagenet -------------------------------------------------------------------------------

def test_imagenet_class_folders(imagenet_root: Path) -> None:
    val, info = load_split("imagenet", "val", imagenet_root)
    train, _ = load_split("imagenet", "train", imagenet_root, augment=True)
    assert len(val) == 5 and len(train) == 7
    assert info.classes == ("n01", "n02", "n03") and info.input_shape == (3, 224, 224)
    assert val[0][0].shape == (3, 224, 224) and train[0][0].shape == (3, 224, 224)
    assert torch.equal(val[0][0], val[0][0])


def test_imagenet_torchvision_layout_names_classes(imagenet_root: Path) -> None:
    write_imagenet_meta(imagenet_root, ["n01", "n02", "n03"])
    val, info = load_split("imagenet", "val", imagenet_root)
    assert info.classes == ("name of n01", "name of n02", "name of n03")
    assert sorted(_labels(val)) == [0, 0, 1, 1, 2]


def test_imagenet_flat_val_folder_is_explained(imagenet_root: Path) -> None:
    for p in (imagenet_root / "val").rglob("*.jpg"):
        p.rename(imagenet_root / "val" / f"{p.parent.name}_{p.name}")
    for d in (imagenet_root / "val").iterdir():
        if d.is_dir():
            d.rmdir()
    with pytest.raises(DataError, match="no class folders") as err:
        load_split("imagenet", "val", imagenet_root)
    assert "<class>" in err.value.fix


def test_imagenet_without_split_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no train/ folder") as err:
        load_split("imagenet", "train", tmp_path)
    assert "ILSVRC2012_devkit_t12.tar.gz" in err.value.fix


# --- subsets and loaders --------------------------------------------------------------------

def test_calibration_subset_is_seeded_random_and_multi_class() -> None:
    train, _ = load_split("digits", "train")
    a = calibration_subset(train, 40, seed=3)
    assert len(a) == 40 and a.indices == calibration_subset(train, 40, seed=3).indices
    assert a.indices != calibration_subset(train, 40, seed=4).indices
    assert sorted(a.indices) != list(range(40)) and len(set(a.indices)) == 40
    assert len({train[i][1] for i in a.indices}) >= 8
    assert calibration_subset(train, 10_000) is train
    with pytest.raises(ConfigError):
        calibration_subset(train, 0)


def test_make_loader_orders_and_shuffles_by_seed() -> None:
    val, _ = load_split("digits", "val")

    def labels(loader: torch.utils.data.DataLoader) -> list[int]:
        return [int(y) for _, ys in loader for y in ys]

    plain = make_loader(val, 64)
    x, y = next(iter(plain))
    assert x.shape == (64, 1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert labels(plain) == _labels(val) == labels(make_loader(val, 64))
    shuffled = labels(make_loader(val, 64, shuffle=True, seed=1))
    assert shuffled == labels(make_loader(val, 64, shuffle=True, seed=1))
    assert shuffled != labels(make_loader(val, 64, shuffle=True, seed=2))
    assert shuffled != _labels(val) and sorted(shuffled) == sorted(_labels(val))
    with pytest.raises(ConfigError):
        make_loader(val, 0)


def test_make_loader_with_workers_fills_the_cache_first(folder3: Path) -> None:
    val, _ = load_split("imagefolder", "val", folder3, val_split=0.5)
    part = eval_subset(val, 5)
    batches = list(make_loader(part, 4, n_workers=1))
    assert list(val._cached) == [1] * 5 + [0] * (len(val) - 5)
    assert [int(y) for _, ys in batches for y in ys] == val.labels[:5]
    assert torch.equal(batches[0][0][2], val[2][0])


# --- errors ---------------------------------------------------------------------------------

def test_option_errors(folder3: Path, cifar_root: Path) -> None:
    with pytest.raises(ConfigError, match="unknown data set 'mnist'") as err:
        load_split("mnist", "train")
    assert all(name in err.value.fix for name in DATASETS)
    with pytest.raises(ConfigError, match="unknown split 'test'"):
        load_split("digits", "test")
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ConfigError, match="outside"):
            load_split("imagefolder", "train", folder3, val_split=bad)
    with pytest.raises(ConfigError, match="fixed validation split"):
        load_split("cifar10", "train", cifar_root, val_split=0.1)
    with pytest.raises(ConfigError, match="8x8"):
        load_split("digits", "train", image_size=32)
    with pytest.raises(ConfigError, match="positive"):
        load_split("imagefolder", "train", folder3, val_split=0.1, image_size=0)


def test_folder_errors(tmp_path: Path, folder3: Path) -> None:
    with pytest.raises(DataError, match="needs a data folder"):
        load_split("imagefolder", "train")
    with pytest.raises(DataError, match="does not exist"):
        load_split("imagefolder", "train", tmp_path / "missing", val_split=0.1)
    (tmp_path / "flat").mkdir()
    write_image(tmp_path / "flat" / "x.jpg", (8, 8))
    with pytest.raises(DataError, match="no class folders"):
        load_split("imagefolder", "train", tmp_path / "flat", val_split=0.1)
    with pytest.raises(DataError, match="no val/ folder") as err:
        load_split("imagefolder", "train", folder3)
    assert "--val-split 0.1" in err.value.fix
    (folder3 / "dog").mkdir()
    (folder3 / "dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"without images in .*: dog"):
        load_split("imagefolder", "train", folder3, val_split=0.1)


def test_empty_split_is_an_error(tmp_path: Path) -> None:
    write_image_folder(tmp_path, {"a": 1, "b": 1})
    with pytest.raises(DataError, match=r"leaves the val split .* empty"):
        load_split("imagefolder", "val", tmp_path, val_split=0.1)


def test_train_val_layout_errors(imagenet_root: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has a val/ folder"):
        load_split("imagefolder", "val", imagenet_root, val_split=0.1)
    write_image_folder(imagenet_root / "val", {"n99": 1})
    with pytest.raises(DataError, match="lacks: n99"):
        load_split("imagefolder", "val", imagenet_root)
    write_image_folder(tmp_path / "only" / "val", {"a": 1})
    with pytest.raises(DataError, match="no train/"):
        load_split("imagefolder", "val", tmp_path / "only")


@pytest.mark.parametrize("name", ["broken.jpg", "broken.bmp"])
def test_corrupt_image_names_the_file(folder3: Path, name: str) -> None:
    bad = folder3 / "ant" / name
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole image")
    train, _ = load_split("imagefolder", "train", folder3, val_split=0.1)
    val, _ = load_split("imagefolder", "val", folder3, val_split=0.1)
    split = train if str(bad) in _paths(train) else val
    with pytest.raises(DataError, match=name) as err:
        split[_paths(split).index(str(bad))]
    assert "corrupt" in err.value.fix


# --- the real data at hand ------------------------------------------------------------------

@pytest.mark.skipif(not REAL_CIFAR10_2K.is_dir(), reason=f"{REAL_CIFAR10_2K} is not here")
def test_real_cifar10_2k_imagefolder() -> None:
    train, info = load_split("imagefolder", "train", REAL_CIFAR10_2K, val_split=0.1)
    val, _ = load_split("imagefolder", "val", REAL_CIFAR10_2K, val_split=0.1)
    assert info.classes == CIFAR10_CLASSES and info.input_shape == (3, 32, 32)
    assert (len(train), len(val)) == (18_000, 2_000)
    assert not set(_paths(train)) & set(_paths(val))
    assert Counter(label for _, label in val.samples) == dict.fromkeys(range(10), 200)
    first = [val[i] for i in range(20)]
    assert [y for _, y in first] == list(range(10)) * 2
    assert all(x.shape == (3, 32, 32) and x.dtype == torch.float32 for x, _ in first)
    assert -2.5 < torch.stack([x for x, _ in first]).mean().item() < 2.5
