"""Checkpoints: round trip, the original repository's layout, and files that must be refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from bsnn.checkpoint import (
    ModelMeta,
    is_binary_state,
    load_model,
    read_checkpoint,
    save_checkpoint,
)
from bsnn.errors import CheckpointError
from bsnn.models import build_model
from bsnn.models.binary import binary_layers

CIFAR100 = {"arch": "vgg15ab", "dataset": "cifar100", "num_classes": 100,
            "input_shape": (3, 32, 32)}


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def vgg15_cifar100() -> nn.Module:
    torch.manual_seed(0)
    return build_model("vgg15ab", 100, (3, 32, 32))


def _original_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Keys as the original wrote them: `model.features = DataParallel(model.features)`."""
    return {k.replace("features.", "features.module.", 1): v.clone()
            for k, v in model.state_dict().items()}


@pytest.mark.parametrize("binary", [False, True])
def test_round_trip_keeps_weights_and_metadata(tmp_path: Path, binary: bool) -> None:
    torch.manual_seed(1)
    net = build_model("vgg6ab", 10, (1, 8, 8), binary=binary)
    meta = ModelMeta(arch="vgg6ab", dataset="digits", num_classes=10, input_shape=(1, 8, 8),
                     binary=binary, mean=(0.5,), std=(0.25,), ann_accuracy=0.97,
                     recipe={"lr": 0.05, "lr_milestones": [20, 26]})
    path = tmp_path / "m.pt"
    save_checkpoint(path, net, meta)
    loaded, meta2 = load_model(path)
    assert _same_weights(net, loaded)
    assert meta2 == meta
    assert not loaded.training
    assert not list(tmp_path.glob("*.tmp"))  # the atomic write leaves no temp file


def test_train_state_survives_the_safe_loader(tmp_path: Path) -> None:
    net = build_model("vgg6ab", 10, (1, 8, 8))
    opt = torch.optim.Adam(net.parameters(), betas=(0.0, 0.999))
    net(torch.randn(2, 1, 8, 8)).sum().backward()
    opt.step()
    meta = ModelMeta(arch="vgg6ab", dataset="digits", num_classes=10, input_shape=(1, 8, 8))
    save_checkpoint(tmp_path / "s.pt", net, meta, train_state={"epoch": 3,
                                                                "optimizer": opt.state_dict()})
    state = read_checkpoint(tmp_path / "s.pt")["train_state"]
    assert state["epoch"] == 3
    assert state["optimizer"]["param_groups"][0]["betas"] == (0.0, 0.999)


@pytest.mark.parametrize("wrapper", ["dict", "bare"])
def test_original_layout_vgg15ab_loads(tmp_path: Path, vgg15_cifar100: nn.Module,
                                       wrapper: str) -> None:
    state = _original_state(vgg15_cifar100)
    assert "features.module.0.weight" in state and "classifier.4.weight" in state
    payload = {"epoch": 200, "arch": "vgg15ab", "best_prec1": 64.9, "state_dict": state}
    path = tmp_path / "model_best.pth.tar"
    torch.save(payload if wrapper == "dict" else state, path)
    loaded, meta = load_model(path, **CIFAR100)
    assert _same_weights(loaded, vgg15_cifar100)
    assert (meta.arch, meta.dataset, meta.num_classes, meta.input_shape) == (
        "vgg15ab", "cifar100", 100, (3, 32, 32))
    assert meta.source == "original layout"


def test_original_layout_without_arch_is_refused_with_a_fix(tmp_path: Path,
                                                           vgg15_cifar100: nn.Module) -> None:
    path = tmp_path / "orig.pth"
    torch.save({"state_dict": _original_state(vgg15_cifar100)}, path)
    with pytest.raises(CheckpointError, match="no bsnn metadata") as err:
        load_model(path)
    assert "--arch" in err.value.fix


def test_other_class_count_is_refused_naming_the_layer(tmp_path: Path,
                                                       vgg15_cifar100: nn.Module) -> None:
    path = tmp_path / "orig.pth"
    torch.save({"state_dict": _original_state(vgg15_cifar100)}, path)
    with pytest.raises(CheckpointError, match=r"classifier\.4\.weight"):
        load_model(path, **{**CIFAR100, "num_classes": 10})


def test_other_arch_is_refused_naming_missing_and_unexpected_keys(tmp_path: Path) -> None:
    small = build_model("vgg8ab", 100, (3, 32, 32))
    path = tmp_path / "vgg8.pth"
    torch.save({"state_dict": _original_state(small)}, path)
    with pytest.raises(CheckpointError) as err:
        load_model(path, **CIFAR100)
    message = err.value.message
    assert "missing keys" in message and "features.24.weight" in message
    assert "does not fit" in message


def test_metadata_contradicting_the_request_is_refused(tmp_path: Path) -> None:
    net = build_model("vgg6ab", 10, (1, 8, 8))
    meta = ModelMeta(arch="vgg6ab", dataset="digits", num_classes=10, input_shape=(1, 8, 8))
    save_checkpoint(tmp_path / "d.pt", net, meta)
    with pytest.raises(CheckpointError, match="digits model"):
        load_model(tmp_path / "d.pt", dataset="cifar100")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint(tmp_path / "nope.pt")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        read_checkpoint(tmp_path / "empty.pt")


def test_truncated_file(tmp_path: Path) -> None:
    net = build_model("vgg6ab", 10, (1, 8, 8))
    meta = ModelMeta(arch="vgg6ab", dataset="digits", num_classes=10, input_shape=(1, 8, 8))
    save_checkpoint(tmp_path / "full.pt", net, meta)
    data = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_checkpoint(tmp_path / "cut.pt")


@pytest.mark.parametrize("text", ["these are not weights\n", '{"state_dict": {}}\n', "#!/bin/sh\n"])
def test_text_file_is_refused_as_not_a_checkpoint(tmp_path: Path, text: str) -> None:
    (tmp_path / "notes.pt").write_text(text)
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(tmp_path / "notes.pt")
    assert err.value.message == (f"{tmp_path / 'notes.pt'} is not a PyTorch checkpoint "
                                 f"(it starts with {text.encode()[:4]!r})")
    assert "torch.save" in err.value.fix


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="folder"):
        read_checkpoint(tmp_path)


class _Exploit:
    """Unpickling this runs `exec`, which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').close()",)


def test_pickle_that_runs_code_is_refused_and_the_code_does_not_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": _Exploit(marker)}, path)
    with pytest.raises(CheckpointError, match="nothing in it was run"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError):
        load_model(path, **CIFAR100)
    assert not marker.exists()
    # the payload is real: the unsafe loader does run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_pickled_whole_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(build_model("vgg6ab", 10, (1, 8, 8)), path)
    with pytest.raises(CheckpointError, match="Python objects") as err:
        read_checkpoint(path)
    assert "state_dict" in err.value.fix


def test_non_model_payload_is_refused(tmp_path: Path) -> None:
    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="not a model's state dict"):
        read_checkpoint(tmp_path / "list.pt")


def _deployed_binary_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A binary model saved as the authors saved theirs: sign(W) * alpha in place of the shadow
    weights, in the original layout."""
    state = model.state_dict()
    for name, layer in model.named_modules():
        if layer in binary_layers(model):
            state[f"{name}.weight"] = layer.binary_weight()
    return _original_state_of(state)


def _original_state_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k.replace("features.", "features.module.", 1): v.clone() for k, v in state.items()}


def test_original_binary_checkpoint_is_detected_and_loads_as_binary(tmp_path: Path) -> None:
    torch.manual_seed(2)
    binary = build_model("vgg15ab", 100, (3, 32, 32), binary=True)
    path = tmp_path / "binarized_vgg15.pth.tar"
    torch.save({"best_acc": 64.8, "state_dict": _deployed_binary_state(binary)}, path)
    loaded, meta = load_model(path, **CIFAR100)
    assert meta.binary and meta.source == "original layout"
    assert len(binary_layers(loaded)) == 13  # 12 of the 13 convs, and the hidden linear
    for mine, theirs in zip(binary_layers(loaded), binary_layers(binary), strict=True):
        # alpha re-measured from +-alpha: equal but for the rounding of a mean
        assert torch.allclose(mine.binary_weight(), theirs.binary_weight(), rtol=1e-6, atol=0)
    assert not load_model(path, **CIFAR100, binary=False)[1].binary  # an explicit answer wins


def test_binary_detection_tolerates_a_relative_1e6_and_no_more() -> None:
    torch.manual_seed(3)
    state = _deployed_binary_state(build_model("vgg6ab", 10, (1, 8, 8), binary=True))
    assert is_binary_state(state)
    key = "features.module.3.weight"  # the second conv: binary
    for spread, binary in ((5e-7, True), (5e-6, False)):
        bent = dict(state)
        bent[key] = state[key].double().clone()
        bent[key][0, 0, 0, 0] *= 1 + spread
        assert is_binary_state(bent) is binary, spread
    full = _original_state_of(build_model("vgg6ab", 10, (1, 8, 8)).state_dict())
    assert not is_binary_state(full)
    # the first and the last layer are full precision (above); every other one must be binary
    assert not is_binary_state({**state, "classifier.1.weight": full["classifier.1.weight"]})


def test_sign_mode_folds_alpha_on_a_detected_binary_checkpoint(tmp_path: Path) -> None:
    """Before detection such a file loaded as full precision and `sign` did nothing."""
    from bsnn.cli import main

    torch.manual_seed(4)
    path = tmp_path / "orig-binary.pth"
    torch.save({"state_dict": _deployed_binary_state(
        build_model("vgg6ab", 10, (1, 8, 8), binary=True))}, path)
    summaries = {}
    for mode in ("alpha", "sign"):
        job = tmp_path / mode
        assert main(["convert", "--model", str(path), "--dataset", "digits", "--arch", "vgg6ab",
                     "--binary-weights", mode, "--time", "8", "--eval_size", "64", "--norm",
                     "32", "--job-dir", str(job), "--device", "cpu"]) == 0
        (summary,) = job.glob("*/summary.json")
        summaries[mode] = json.loads(summary.read_text())
    layers = summaries["sign"]["layers"]
    assert [layer["binary"] for layer in layers] == [False, True, True, True, True, False]
    thresholds = [layer["threshold"] for layer in layers]
    assert thresholds != [layer["threshold"] for layer in summaries["alpha"]["layers"]]
    assert summaries["sign"]["accuracy_per_step"] == pytest.approx(
        summaries["alpha"]["accuracy_per_step"], abs=1 / 64 + 1e-9)


def test_width_is_stored_and_rebuilds_the_model(tmp_path: Path) -> None:
    net = build_model("vgg6ab", 10, (1, 8, 8), width=0.5)
    meta = ModelMeta(arch="vgg6ab", dataset="digits", num_classes=10, input_shape=(1, 8, 8),
                     width=0.5)
    save_checkpoint(tmp_path / "half.pt", net, meta)
    loaded, meta2 = load_model(tmp_path / "half.pt")
    assert meta2.width == 0.5 and _same_weights(net, loaded)
    with pytest.raises(CheckpointError, match=r"width 0\.5 but width 1 was asked for") as err:
        load_model(tmp_path / "half.pt", width=1.0)
    assert "width=0.5" in err.value.fix
    # checkpoints written before width existed are width 1
    raw = read_checkpoint(tmp_path / "half.pt")
    del raw["meta"]["width"]
    assert ModelMeta.from_dict(raw["meta"]).width == 1.0
    # files without metadata load at the width asked for (default 1)
    torch.save({"state_dict": _original_state_of(net.state_dict())}, tmp_path / "orig.pth")
    shape = {"arch": "vgg6ab", "num_classes": 10, "input_shape": (1, 8, 8)}
    assert load_model(tmp_path / "orig.pth", **shape, width=0.5)[1].width == 0.5
    with pytest.raises(CheckpointError, match="shape mismatch"):
        load_model(tmp_path / "orig.pth", **shape)
