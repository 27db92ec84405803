"""Small fixtures shared by the tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from bsnn.checkpoint import ModelMeta, save_checkpoint
from bsnn.models import build_model


def _batches_from(images: torch.Tensor, size: int) -> Callable[[], list[torch.Tensor]]:
    """The `batches` callable that `convert` takes: the same images, in batches of `size`
    (the last one shorter), on every call."""
    return lambda: [images[i:i + size] for i in range(0, len(images), size)]


@pytest.fixture(scope="session")
def batches_from() -> Callable[[torch.Tensor, int], Callable[[], list[torch.Tensor]]]:
    return _batches_from


@pytest.fixture(scope="module")
def one_thread():  # type: ignore[no-untyped-def]
    """Tiny tensors on one intra-op thread: on a busy 2-core machine, two threads wait on each
    other and a small conv takes 100x longer (31 ms instead of 0.3 ms measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained digits-sized VGG saved as our checkpoint: fast runs with no training."""
    path = tmp_path_factory.mktemp("model") / "digits-tiny.pt"
    torch.manual_seed(0)
    save_checkpoint(path, build_model("vgg6ab", 10, (1, 8, 8)),
                    ModelMeta("vgg6ab", "digits", 10, (1, 8, 8)))
    return path
