"""Training: the paper's presets, learning, exact resume, bundled models, the authors' binary
training (XNOR-Net BinOp, fine-tuning from FP), the CLI."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bsnn.checkpoint import bundled_names, load_model, read_checkpoint, resolve_model_path
from bsnn.cli import main
from bsnn.data import load_split, make_loader
from bsnn.errors import CheckpointError, ConfigError, DeviceError
from bsnn.models import build_model
from bsnn.models.binary import XnorBinOp, binary_layers
from bsnn.recipes import PRESETS, Recipe
from bsnn.train import (
    EpochResult,
    _train_epoch,
    apply_schedule,
    evaluate,
    last_state_path,
    make_optimizer,
    resolve_device,
    resume_recipe,
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
    assert [name for name, r in PRESETS.items() if r.binary and r.binarize == "xnor"] == [
        "cifar100-binary", "imagenet-binary", "digits-binary", "cifar10-binary"]
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
    adam = make_optimizer(net, replace(PRESETS["imagenet-binary"], binarize="ste"))
    assert isinstance(adam, torch.optim.Adam)
    assert adam.param_groups[0]["betas"] == (0.0, 0.999)
    sgd = make_optimizer(net, PRESETS["cifar100-fp"])
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.9
    # binary layers hand the optimiser their full-precision shadow weights
    assert {id(p) for p in net.parameters()} == {id(p) for p in adam.param_groups[0]["params"]}


def test_xnor_shadow_weights_get_no_weight_decay_and_their_eps() -> None:
    """The authors' x1e9 gradients made Adam's L2 decay and eps vanish for binary layers: bsnn
    gives those weights a group of their own without decay, with eps / 1e9, all epochs long."""
    net = build_model("vgg6ab", 10, (1, 8, 8), binary=True)
    recipe = PRESETS["cifar100-binary"]
    adam = make_optimizer(net, recipe)
    rest, shadow = adam.param_groups
    assert [id(p) for p in shadow["params"]] == [id(m.weight) for m in binary_layers(net)]
    assert len(shadow["params"]) == 4 and len(rest["params"]) == 2  # first conv, last linear
    assert shadow["eps"] == pytest.approx(1e-17) and rest["eps"] == 1e-8
    for epoch, decay in ((0, 5e-4), (29, 5e-4), (30, 0.0)):
        assert apply_schedule(adam, recipe, epoch) == recipe.lr_at(epoch)
        assert (rest["weight_decay"], shadow["weight_decay"]) == (decay, 0.0)
        assert rest["lr"] == shadow["lr"] == recipe.lr_at(epoch)


def test_their_scaled_gradients_and_bsnns_groups_take_the_same_adam_steps() -> None:
    """Why the group above is faithful: Adam on G x 1e9 with L2 decay 5e-4 and eps 1e-8 (theirs)
    steps as Adam on G without decay and with eps 1e-17 (bsnn's)."""
    torch.manual_seed(5)
    start = torch.rand(64, 9) * 2 - 1
    theirs, ours = start.clone().requires_grad_(), start.clone().requires_grad_()
    opt_theirs = torch.optim.Adam([theirs], lr=5e-4, weight_decay=5e-4, eps=1e-8)
    opt_ours = torch.optim.Adam([ours], lr=5e-4, weight_decay=0.0, eps=1e-17)
    for _ in range(5):
        grad = torch.randn(64, 9) * 1e-3
        theirs.grad, ours.grad = grad * 1e9, grad.clone()
        opt_theirs.step()
        opt_ours.step()
    assert (ours - start).abs().min() > 0
    assert torch.allclose(theirs, ours, rtol=0, atol=1e-7)
    plain = start.clone().requires_grad_()  # without the 1e9 their decay would have counted
    opt_plain = torch.optim.Adam([plain], lr=5e-4, weight_decay=5e-4, eps=1e-8)
    for _ in range(5):
        plain.grad = torch.randn(64, 9) * 1e-8
        opt_plain.step()
    assert not torch.allclose(plain, ours, atol=1e-5)


def _their_gradient(weight: torch.Tensor, grad_of_binary: torch.Tensor) -> torch.Tensor:
    """updateBinaryGradWeight's result (without its x1e9), written from its formula: for each
    output channel, alpha * G * [|W| <= 1] + sign(W) * mean(sign(W) * G), times n (1 - 1/C_in),
    with torch.sign (sign(0) = 0) as theirs."""
    out = weight.shape[0]
    flat_w, flat_g = weight.reshape(out, -1), grad_of_binary.reshape(out, -1)
    n = flat_w.shape[1]
    alpha = flat_w.abs().mean(dim=1, keepdim=True)
    inside = (flat_w.abs() <= 1).to(flat_w.dtype)
    through_alpha = torch.sign(flat_w) * (torch.sign(flat_w) * flat_g).mean(dim=1, keepdim=True)
    return ((alpha * flat_g * inside + through_alpha) * n * (1 - 1 / weight.shape[1])).view_as(
        weight)


def test_xnor_gradient_is_the_authors_formula() -> None:
    """Their step: centre and clamp W, forward and backward with sign(W) * alpha in its place
    (G: the gradient of that binary weight), then W's gradient by their formula. bsnn's
    XnorBinOp + autograd must give the same gradient for every binary layer."""
    torch.manual_seed(6)
    net = build_model("vgg6ab", 10, (1, 8, 8), binary=True)
    with torch.no_grad():
        for layer in binary_layers(net):
            layer.weight.add_(0.05).mul_(20)  # off centre, and some |w| > 1 before the clamp
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    binop = XnorBinOp(net)
    binop.constrain()
    # theirs: the same weights in a full-precision twin, binary weights swapped in by hand
    twin = build_model("vgg6ab", 10, (1, 8, 8))
    twin.load_state_dict(net.state_dict())
    twin_layers = [m for m in twin.modules() if isinstance(m, nn.Conv2d | nn.Linear)][1:-1]
    real = [layer.weight.detach().clone() for layer in twin_layers]
    with torch.no_grad():
        for layer, w in zip(twin_layers, real, strict=True):
            alpha = w.abs().reshape(w.shape[0], -1).mean(1).view(-1, *[1] * (w.dim() - 1))
            layer.weight.copy_(torch.sign(w) * alpha)
    twin.eval()  # no dropout: both see the same network
    net.eval()
    F.cross_entropy(twin(x), y).backward()
    F.cross_entropy(net(x), y).backward()
    binop.scale_gradients()
    for layer, twin_layer, w in zip(binary_layers(net), twin_layers, real, strict=True):
        expected = _their_gradient(w, twin_layer.weight.grad)
        assert layer.weight.grad is not None
        assert torch.allclose(layer.weight.grad, expected, rtol=1e-4, atol=1e-6)


def test_after_an_xnor_step_the_shadow_weights_are_centred_and_clamped() -> None:
    torch.manual_seed(7)
    net = build_model("vgg6ab", 10, (1, 8, 8), binary=True)
    layers = binary_layers(net)
    with torch.no_grad():
        for layer in layers:
            layer.weight.add_(0.3)  # off centre by far more than a step moves it
        layers[0].weight[0, 0, 0, 0] = 5.0  # beyond the clamp even after centring
    first = net.features[0].weight.detach().clone()
    batch = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))]
    recipe = PRESETS["digits-binary"]
    _train_epoch(net, batch, make_optimizer(net, recipe), torch.device("cpu"),
                 lambda *_: None, XnorBinOp(net))
    clamped_somewhere = False
    for layer in layers:
        w = layer.weight.detach()
        assert w.abs().max() <= 1.0
        at_bound = (w.abs() == 1.0).any(dim=1, keepdim=True)  # the clamp moved the mean there
        clamped_somewhere |= bool(at_bound.any())
        means = w.mean(dim=1, keepdim=True)
        assert means[~at_bound].abs().max() < 1e-6
    assert clamped_somewhere
    # the full-precision first layer is neither centred (one input channel: it would be 0)
    # nor clamped
    assert not torch.equal(net.features[0].weight.detach(), first)
    assert net.features[0].weight.detach().abs().min() > 0


def test_xnor_training_refuses_sgd_and_single_channel_layers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Adam"):
        train(replace(QUICK, optimizer="sgd"), tmp_path / "m.pt")
    with pytest.raises(ConfigError, match="--binarize"):
        train(replace(QUICK, binarize="bnn"), tmp_path / "m.pt")
    with pytest.raises(ConfigError, match="input channel"):
        XnorBinOp(build_model("vgg6ab", 10, (1, 8, 8), binary=True, width=1 / 32))


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


def test_fine_tuning_from_the_bundled_fp_model_beats_training_from_scratch(
        tmp_path: Path) -> None:
    """The authors fine-tuned binary nets from FP checkpoints: one epoch of it is far above
    chance (0.1) and above one epoch from scratch (measured: 0.961 vs 0.736)."""
    one = replace(PRESETS["digits-binary"], epochs=1)
    tuned = train(replace(one, init="bundled:digits-fp"), tmp_path / "tuned.pt", device="cpu")
    scratch = train(one, tmp_path / "scratch.pt", device="cpu")
    assert tuned.best_accuracy > 0.9
    assert tuned.best_accuracy > scratch.best_accuracy + 0.1
    _, meta = load_model(tmp_path / "tuned.pt")
    assert meta.binary and meta.recipe["init"] == "bundled:digits-fp"
    assert meta.recipe["binarize"] == "xnor"


@pytest.mark.parametrize(("change", "problem"), [
    ({"arch": "vgg8ab"}, "vgg6ab model but arch=vgg8ab"),
    ({"width": 0.5}, "width 1 but width 0.5"),
    ({"init": "bundled:nothing"}, "no bundled model"),
])
def test_init_from_another_model_is_a_clear_error(tmp_path: Path, change: dict[str, object],
                                                  problem: str) -> None:
    recipe = replace(QUICK, **({"init": "bundled:digits-fp"} | change))  # type: ignore[arg-type]
    with pytest.raises(CheckpointError, match="--init") as err:
        train(recipe, tmp_path / "m.pt", device="cpu")
    assert problem in err.value.message and "--init" in err.value.fix


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
    out, fp = tmp_path / "cli.pt", tmp_path / "fp.pt"
    shutil.copy(resolve_model_path("bundled:digits-fp"), fp)
    args = ["train", "--preset", "digits-binary", "--batch-size", "64", "--out", str(out),
            "--device", "cpu"]
    assert main([*args, "--epochs", "1", "--init", str(fp), "--binarize", "ste"]) == 0
    text = capsys.readouterr().out
    assert f"(binary, ste) on digits from {fp}" in text
    assert "epoch   1/1" in text and f"best checkpoint: {out}" in text
    assert out.is_file() and last_state_path(out).is_file()
    fp.unlink()  # resuming needs the last state only
    assert main([*args, "--epochs", "2", "--resume"]) == 0  # keeps its init and binarize
    assert "resuming at epoch 2" in capsys.readouterr().out
    assert read_checkpoint(last_state_path(out))["train_state"]["epoch"] == 2
    kept = resume_recipe(out)
    assert (kept.init, kept.binarize, kept.epochs) == (str(fp), "ste", 2)
    assert main([*args, "--epochs", "3", "--resume", "--binarize", "xnor"]) == 2
    assert "cannot change binarize" in capsys.readouterr().err


def test_cli_width_and_normalize_reach_the_checkpoint_and_its_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "half.pt"
    assert main(["train", "--preset", "digits-fp", "--epochs", "1", "--width", "0.5",
                 "--normalize", "0.5,0.25", "--out", str(out), "--device", "cpu"]) == 0
    capsys.readouterr()
    assert main(["info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["width"], info["mean"], info["std"]) == (0.5, [0.5], [0.25])
    assert info["recipe"]["normalize"] == "0.5,0.25" and info["recipe"]["width"] == 0.5
    net, _ = load_model(out)
    assert net.features[0].out_channels == 16  # vgg6ab's 32 at width 0.5
    assert main(["info", str(out)]) == 0
    assert "width" in capsys.readouterr().out
    # a run normalises as the model was trained unless --normalize says otherwise
    assert main(["convert", "--model", str(out), "--time", "4", "--eval_size", "8", "--norm",
                 "16", "--job-dir", str(tmp_path / "runs"), "--device", "cpu"]) == 0
    (events,) = (tmp_path / "runs").glob("*/events.jsonl")
    phases = [json.loads(line) for line in events.read_text().splitlines()]
    (load_data,) = [e["message"] for e in phases if e.get("name") == "load_data"]
    assert load_data == "loading digits (mean [0.5], std [0.25])"
    assert main(["convert", "--model", str(out), "--width", "1", "--job-dir",
                 str(tmp_path / "runs")]) == 2
    assert "width 0.5 but width 1 was asked for" in capsys.readouterr().err


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


@pytest.mark.parametrize("binary", [False, True])
def test_info_on_an_original_layout_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         binary: bool) -> None:
    net = build_model("vgg6ab", 10, (1, 8, 8), binary=binary)
    state = net.state_dict()
    for name, layer in net.named_modules():  # as the authors saved binary nets: sign(W) * alpha
        if layer in binary_layers(net):
            state[f"{name}.weight"] = layer.binary_weight()
    state = {k.replace("features.", "features.module.", 1): v for k, v in state.items()}
    torch.save({"state_dict": state}, tmp_path / "orig.pth")
    assert main(["info", str(tmp_path / "orig.pth")]) == 0
    text = capsys.readouterr().out
    assert "no bsnn metadata: original layout" in text
    assert ("binary (read from the weights" in text) == binary
    assert main(["info", str(tmp_path / "orig.pth"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["layout"] == "original" and info["outputs"] == 10
    assert info["binary"] is binary and info["width"] is None
    assert info.get("binary_layers") == (4 if binary else None)
