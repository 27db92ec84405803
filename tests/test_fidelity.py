"""What the original's command line means in bsnn (docs/fidelity.md): delayed propagation unless
`--one-step`, and `--protocol original` calibrating on the first N training images with the
training transform and dropout active, evaluating with the training transform, shuffled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from fixtures_data import skip_cifar_md5, write_cifar100
from torch import nn
from torch.utils.data import TensorDataset

import bsnn.pipeline.sources
from bsnn.cli import main
from bsnn.config import RunConfig
from bsnn.conversion import convert
from bsnn.data import load_split
from bsnn.jobdir import list_runs
from bsnn.options import OPTION
from bsnn.pipeline.sources import first_images, shuffled

pytestmark = pytest.mark.usefixtures("one_thread")
RUN = ["--model", "bundled:digits-fp", "--time", "24", "--eval_size", "64", "--norm", "32",
       "--device", "cpu", "--quiet"]


def only_summary(job_dir: Path) -> Any:
    (listed,) = list_runs(job_dir)
    return listed.summary


def test_the_originals_command_line_propagates_delayed_and_one_step_same_step(
        tmp_path: Path) -> None:
    assert RunConfig().propagation == OPTION["propagation"].default == "delayed"
    assert main(["convert", *RUN, "--job-dir", str(tmp_path / "plain")]) == 0
    assert main(["convert", *RUN, "--one-step", "--job-dir", str(tmp_path / "one")]) == 0
    delayed, same = only_summary(tmp_path / "plain"), only_summary(tmp_path / "one")
    assert delayed.config["propagation"] == "delayed"
    assert same.config["propagation"] == "same-step"
    # vgg6ab: its readout hears the input only after one step per conv, pooling and linear,
    # so the delayed curve climbs later
    assert sum(delayed.accuracy_per_step) < sum(same.accuracy_per_step)
    assert delayed.accuracy_per_step[7] < same.accuracy_per_step[7]
    assert "propagation delayed" in (tmp_path / "plain").joinpath(
        delayed.run_id, "summary.md").read_text()


def test_the_original_calibrates_on_the_first_images_in_order(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch,
                                                               ) -> None:
    seen: list[tuple[int, int]] = []
    real = bsnn.pipeline.sources.first_images

    def spy(dataset: Any, n: int, seed: int) -> Any:
        chosen = real(dataset, n, seed)
        seen.append((len(chosen), n))
        first = torch.stack([dataset[i][0] for i in range(n)])
        assert torch.equal(chosen.tensors[0], first)  # digits: no random transform
        return chosen

    monkeypatch.setattr(bsnn.pipeline.sources, "first_images", spy)
    assert main(["convert", *RUN, "--protocol", "original", "--job-dir", str(tmp_path)]) == 0
    assert seen == [(32, 32)]
    summary = only_summary(tmp_path)
    assert summary.config["protocol"] == "original" and summary.status == "finished"


def test_first_images_draw_the_random_transform_once_and_keep_it(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 ) -> None:
    """CIFAR under the original's protocol: random crop and flip on both splits; the
    calibration images are drawn once (same seed, same images) and differ from the plain
    ones; the evaluation order is a seeded shuffle."""
    skip_cifar_md5(monkeypatch)
    write_cifar100(tmp_path)
    plain, _ = load_split("cifar100", "train", tmp_path)
    augmented, _ = load_split("cifar100", "train", tmp_path, augment=True)
    a, b = first_images(augmented, 6, seed=1), first_images(augmented, 6, seed=1)
    assert torch.equal(a.tensors[0], b.tensors[0])
    assert torch.equal(a.tensors[1], torch.tensor([plain[i][1] for i in range(6)]))
    assert not torch.equal(a.tensors[0], torch.stack([plain[i][0] for i in range(6)]))
    val, _ = load_split("cifar100", "val", tmp_path, augment=True)
    plain_val, _ = load_split("cifar100", "val", tmp_path)
    torch.manual_seed(0)
    assert any(not torch.equal(val[i][0], plain_val[i][0]) for i in range(len(val)))
    order = shuffled(plain_val, seed=2)
    assert sorted(order.indices) == list(range(len(plain_val)))
    assert order.indices != list(range(len(plain_val)))


def test_dropout_is_active_after_the_relu_it_follows() -> None:
    """The original records each ReLU's output before the dropout after it: the first layer's
    threshold is the same with dropout active, the next one's is not; the same seed gives the
    same thresholds (every percentile pass draws the same masks)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64, bias=False), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(64, 32, bias=False), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(32, 4, bias=False))
    images = TensorDataset(torch.randn(256, 20))
    batches = lambda: [images.tensors[0][i:i + 64] for i in range(0, 256, 64)]  # noqa: E731

    def lambdas(seed: int | None) -> list[float]:
        conversion = convert(model, batches, 99.0, dropout_seed=seed)
        return [float(layer.lam) for layer in conversion.network.spiking]

    off, on, again = lambdas(None), lambdas(7), lambdas(7)
    assert on == again
    assert on[0] == pytest.approx(off[0], rel=1e-6)
    assert on[1] != pytest.approx(off[1], rel=1e-3)
