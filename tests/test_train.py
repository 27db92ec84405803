"""Training: the paper's presets, learning, exact resume, bundled models, the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bsnn.checkpoint import bundled_names, load_model, read_checkpoint, resolve_model_path
from bsnn.cli import main
from bsnn.data import load_split, make_loader
from bsnn.errors import CheckpointError, ConfigError, DeviceError
from bsnn.models import build_model
from bsnn.train import (
    PRESETS,
    EpochResult,
    Recipe,
    evaluate,
    last_state_path,
    make_optimizer,
    resolve_device,
    train,
)

# A few quick epochs of the binary digits recipe: Adam learns digits within an epoch or two.
QUICK = replace(PRESETS["digits-binary"], epochs=3, lr_step=0)


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """These models are tiny: one thread is as fast, and immune to a busy shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["state_dict"]


def test_paper_presets_are_the_papers_table() -> None:
    expected = {
        "cifar100-fp": dict(batch_size=256, epochs=200, lr=5e-2, optimizer="sgd",
                            weight_decay=1e-4, weight_decay_until=None, binary=False),
        "cifar100-binary": dict(batch_size=256, epochs=200, lr=5e-4, optimizer="adam",
                                weight_decay=5e-4, weight_decay_until=30, binary=True),
        "imagenet-fp": dict(batch_size=128, epochs=100, lr=1e-2, optimizer="sgd",
                            weight_decay=1e-4, weight_decay_until=None, binary=False),
        "imagenet-binary": dict(batch_size=128, epochs=100, lr=5e-4, optimizer="adam",
                                weight_decay=5e-4, weight_decay_until=30, binary=True),
    }
    for name, values in expected.items():
        recipe = PRESETS[name]
        assert {k: getattr(recipe, k) for k in values} == values, name
        assert recipe.arch == "vgg15ab"
        assert recipe.dataset == name.split("-")[0]
    assert PRESETS["cifar100-fp"].momentum == PRESETS["imagenet-fp"].momentum == 0.9
    assert PRESETS["imagenet-binary"].betas == (0.0, 0.999)
    assert PRESETS["cifar100-binary"].betas == (0.9, 0.999)  # Adam's defaults


def test_paper_learning_rate_schedules() -> None:
    fp = PRESETS["cifar100-fp"]  # /10 at epochs 81 and 122
    assert [fp.lr_at(e) for e in (0, 80)] == [5e-2, 5e-2]
    assert fp.lr_at(81) == pytest.approx(5e-3) and fp.lr_at(121) == pytest.approx(5e-3)
    assert fp.lr_at(122) == pytest.approx(5e-4) and fp.lr_at(199) == pytest.approx(5e-4)
    imagenet = PRESETS["imagenet-fp"]  # /10 every 30 epochs
    assert [imagenet.lr_at(e) for e in (0, 29, 30, 59, 60, 90)] == pytest.approx(
        [1e-2, 1e-2, 1e-3, 1e-3, 1e-4, 1e-5])
    for name in ("cifar100-binary", "imagenet-binary"):  # halved every 30 epochs
        binary = PRESETS[name]
        assert [binary.lr_at(e) for e in (0, 29, 30, 60, 90)] == pytest.approx(
            [5e-4, 5e-4, 2.5e-4, 1.25e-4, 6.25e-5])
        assert [binary.weight_decay_at(e) for e in (0, 29, 30, 31, 99)] == [5e-4, 5e-4, 0, 0, 0]
    assert PRESETS["cifar100-fp"].weight_decay_at(150) == 1e-4


def test_optimisers_follow_the_recipe() -> None:
    net = build_model("vgg6ab", 10, (1, 8, 8), binary=True)
    adam = make_optimizer(net, PRESETS["imagenet-binary"])
    assert isinstance(adam, torch.optim.Adam)
    assert adam.param_groups[0]["betas"] == (0.0, 0.999)
    sgd = make_optimizer(net, PRESETS["cifar100-fp"])
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    # binary layers hand the optimiser their full-precision shadow weights
    assert {id(p) for p in net.parameters()} == {id(p) for p in adam.param_groups[0]["params"]}


def test_recipe_round_trips_through_a_dict() -> None:
    for recipe in PRESETS.values():
        assert Recipe.from_dict(json.loads(json.dumps(recipe.to_dict()))) == recipe


@pytest.mark.parametrize("change, word", [({"epochs": 0}, "epochs"), ({"lr": -1.0}, "learning"),
                                          ({"optimizer": "rmsprop"}, "optimizer")])
def test_bad_recipes_are_refused_before_training(tmp_path: Path, change: dict[str, object],
                                                 word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        train(replace(QUICK, **change), tmp_path / "m.pt")  # type: ignore[arg-type]


def test_training_learns_digits(tmp_path: Path) -> None:
    events: list[object] = []
    result = train(QUICK, tmp_path / "m.pt", device="cpu", progress=events.append)
    epochs = [e for e in events if isinstance(e, EpochResult)]
    assert len(epochs) == 3
    assert epochs[-1].train_loss < 0.7 * epochs[0].train_loss
    assert result.best_accuracy > 0.6  # chance is 0.1
    _, meta = load_model(tmp_path / "m.pt")
    assert meta.ann_accuracy == result.best_accuracy
    assert meta.recipe["optimizer"] == "adam" and meta.recipe["best_epoch"] == result.best_epoch + 1
    assert meta.mean == (0.3054,) and meta.input_shape == (1, 8, 8) and meta.binary
    assert "train_state" not in read_checkpoint(tmp_path / "m.pt")


def test_resume_continues_where_it_stopped_and_gives_the_same_model(tmp_path: Path) -> None:
    straight = train(QUICK, tmp_path / "straight.pt", device="cpu")
    train(replace(QUICK, epochs=2), tmp_path / "split.pt", device="cpu")
    assert read_checkpoint(last_state_path(tmp_path / "split.pt"))["train_state"]["epoch"] == 2
    resumed = train(QUICK, tmp_path / "split.pt", device="cpu", resume=True)
    assert [e.epoch for e in resumed.history] == [2]
    a = _weights(last_state_path(tmp_path / "straight.pt"))
    b = _weights(last_state_path(tmp_path / "split.pt"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.best_accuracy == straight.best_accuracy


def test_resume_refuses_a_different_model_or_nothing_to_resume(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train(QUICK, tmp_path / "none.pt", resume=True)
    train(replace(QUICK, epochs=1), tmp_path / "m.pt", device="cpu")
    with pytest.raises(ConfigError, match="binary"):
        train(replace(QUICK, binary=False), tmp_path / "m.pt", resume=True)


def test_asking_for_cuda_without_it_is_a_clear_error() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceError, match="no CUDA"):
        resolve_device("cuda:0")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError):
        resolve_device("tpu")


@pytest.mark.parametrize("name", ["digits-fp", "digits-binary"])
def test_bundled_model_reaches_its_recorded_accuracy(name: str) -> None:
    assert f"bundled:{name}" in bundled_names()
    path = resolve_model_path(f"bundled:{name}")
    assert path.stat().st_size < 1_000_000
    assert "train_state" not in read_checkpoint(path)
    net, meta = load_model(f"bundled:{name}")
    assert meta.binary == name.endswith("binary")
    assert meta.ann_accuracy >= (0.90 if meta.binary else 0.95)
    val, _ = load_split("digits", "val")
    assert evaluate(net, make_loader(val, 256)) == pytest.approx(meta.ann_accuracy, abs=0.005)


def test_cli_trains_one_epoch_then_resumes(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.pt"
    args = ["train", "--preset", "digits-binary", "--batch-size", "64", "--out", str(out),
            "--device", "cpu"]
    assert main([*args, "--epochs", "1"]) == 0
    text = capsys.readouterr().out
    assert "epoch   1/1" in text and f"best checkpoint: {out}" in text
    assert out.is_file() and last_state_path(out).is_file()
    assert main([*args, "--epochs", "2", "--resume"]) == 0
    assert "resuming at epoch 2" in capsys.readouterr().out
    assert read_checkpoint(last_state_path(out))["train_state"]["epoch"] == 2


def test_cli_cuda_without_cuda_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "--gpu", "--epochs", "1", "--out", "/nonexistent/x.pt"]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_info_json_on_a_bundled_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "bundled:digits-binary", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["arch"] == "vgg6ab" and info["dataset"] == "digits" and info["binary"]
    assert info["binary_layers"] == 4 and info["parameters"] > 0
    assert 0.9 <= info["ann_accuracy"] <= 1


def test_info_on_an_original_layout_file(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    net = build_model("vgg6ab", 10, (1, 8, 8))
    state = {k.replace("features.", "features.module.", 1): v
             for k, v in net.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "orig.pth")
    assert main(["info", str(tmp_path / "orig.pth")]) == 0
    assert "no bsnn metadata: original layout" in capsys.readouterr().out
    assert main(["info", str(tmp_path / "orig.pth"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout"] == "original" and info["outputs"] == 10
