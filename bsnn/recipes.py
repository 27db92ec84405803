"""Training recipes: the hyper-parameters of one training run and the paper's presets.

Torch-free, so `bsnn train --help` and every other command build their flags without loading
torch; bsnn.train runs a recipe.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from bsnn.errors import ConfigError
from bsnn.options import OPTION

OPTIMIZERS = ("sgd", "adam")
BINARIZE_MODES = ("ste", "xnor")  # binary layers: plain straight-through, or the authors' BinOp


@dataclass(frozen=True)
class Recipe:
    """Hyper-parameters, model and data set of one training run; stored in the checkpoint."""

    dataset: str = "digits"
    arch: str | None = None  # None: the data set's default architecture
    binary: bool = False
    batch_size: int = 128
    epochs: int = 10
    lr: float = 1e-2
    lr_milestones: tuple[int, ...] = ()  # epochs at which the rate is multiplied by lr_gamma
    lr_step: int = 0  # or: every lr_step epochs (0: off)
    lr_gamma: float = 0.1
    weight_decay: float = 0.0
    weight_decay_until: int | None = None  # from this epoch on, weight decay is 0
    optimizer: str = "sgd"
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    dropout: float = 0.1
    seed: int = 0
    val_split: float | None = None
    image_size: int | None = None
    binarize: str = "ste"  # binary layers: "ste" or "xnor" (the authors' BinOp); see above
    init: str | None = None  # start from this checkpoint's weights (a path or bundled:NAME)
    width: float = 1.0  # conv and hidden widths scaled by this (1: the arch as named)
    normalize: str | None = None  # input statistics (bsnn.options): None = the data set's

    @property
    def model_arch(self) -> str:
        from bsnn.models import DEFAULT_ARCH  # torch: only where a model is built

        return self.arch or DEFAULT_ARCH.get(self.dataset, "vgg8ab")

    def lr_at(self, epoch: int) -> float:
        """Learning rate used during `epoch` (0-based)."""
        drops = sum(epoch >= m for m in self.lr_milestones)
        if self.lr_step > 0:
            drops += epoch // self.lr_step
        return self.lr * self.lr_gamma**drops

    def weight_decay_at(self, epoch: int) -> float:
        """Weight decay during `epoch`: the binary recipes switch it off after epoch 30."""
        if self.weight_decay_until is not None and epoch >= self.weight_decay_until:
            return 0.0
        return self.weight_decay

    def validate(self) -> Recipe:
        """Raise ConfigError naming the first option that cannot work; return self."""
        for name in ("batch_size", "epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} is {value}; it must be at least 1",
                                  f"pass a positive --{name.replace('_', '-')}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate {self.lr} must be positive", "pass e.g. --lr 0.01")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"weight decay {self.weight_decay} is negative",
                              "pass --weight-decay 0 or more")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"optimizer {self.optimizer!r} is not known",
                              f"use one of: {', '.join(OPTIMIZERS)}")
        if self.val_split is not None and not 0 < self.val_split < 1:
            raise ConfigError(f"val_split {self.val_split} is outside (0, 1)",
                              "pass e.g. --val-split 0.1")
        if self.image_size is not None and self.image_size < 1:
            raise ConfigError(f"image size {self.image_size} must be positive",
                              "pass e.g. --image-size 224")
        self._validate_binary_training()
        for name in ("width", "normalize"):  # the run options' own checks
            OPTION[name].validate(getattr(self, name), {})
        return self

    def _validate_binary_training(self) -> None:
        if self.binarize not in BINARIZE_MODES:
            raise ConfigError(f"binarize {self.binarize!r} is not known",
                              f"pass --binarize one of: {', '.join(BINARIZE_MODES)}")
        if self.binary and self.binarize == "xnor" and self.optimizer != "adam":
            raise ConfigError(
                "--binarize xnor reproduces the authors' Adam training; with SGD their gradient "
                "scale (x n (1 - 1/C_in) per layer) would make the binary layers' steps "
                "thousands of times too large", "pass --optimizer adam, or --binarize ste")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Recipe:
        known = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        if "lr_milestones" in known:
            known["lr_milestones"] = tuple(known["lr_milestones"])
        if "betas" in known:
            known["betas"] = tuple(known["betas"])
        return cls(**known)


PRESETS: dict[str, Recipe] = {
    # The paper's table (the original repository's README, "Hyperparameter Settings").
    "cifar100-fp": Recipe(dataset="cifar100", arch="vgg15ab", batch_size=256, epochs=200, lr=5e-2,
                          lr_milestones=(81, 122), lr_gamma=0.1, weight_decay=1e-4,
                          optimizer="sgd", momentum=0.9),
    "cifar100-binary": Recipe(dataset="cifar100", arch="vgg15ab", binary=True, batch_size=256,
                              epochs=200, lr=5e-4, lr_step=30, lr_gamma=0.5, weight_decay=5e-4,
                              weight_decay_until=30, optimizer="adam", binarize="xnor"),
    "imagenet-fp": Recipe(dataset="imagenet", arch="vgg15ab", batch_size=128, epochs=100, lr=1e-2,
                          lr_step=30, lr_gamma=0.1, weight_decay=1e-4, optimizer="sgd",
                          momentum=0.9),
    "imagenet-binary": Recipe(dataset="imagenet", arch="vgg15ab", binary=True, batch_size=128,
                              epochs=100, lr=5e-4, lr_step=30, lr_gamma=0.5, weight_decay=5e-4,
                              weight_decay_until=30, optimizer="adam", betas=(0.0, 0.999),
                              binarize="xnor"),
    # CPU-sized recipes: the bundled digits models and a CIFAR-10 (or cifar10-2k) check.
    "digits-fp": Recipe(dataset="digits", arch="vgg6ab", batch_size=32, epochs=30, lr=5e-2,
                        lr_milestones=(20, 26), weight_decay=1e-4, optimizer="sgd"),
    "digits-binary": Recipe(dataset="digits", arch="vgg6ab", binary=True, batch_size=32,
                            epochs=40, lr=2e-3, lr_step=15, lr_gamma=0.5, weight_decay=5e-5,
                            weight_decay_until=20, optimizer="adam", binarize="xnor"),
    # About 65 s an epoch on 2 CPU cores for cifar10-2k (18,000 images): 7 + 7 epochs fit in 15
    # minutes. Adam for both: without batch norm, SGD starts too slowly for so few epochs
    # (cifar10-2k, 5,000 images, 4 epochs: 23 % with SGD 5e-2, 37 % with Adam 1e-3).
    "cifar10-fp": Recipe(dataset="cifar10", arch="vgg8ab", batch_size=64, epochs=7, lr=1e-3,
                         lr_milestones=(4, 6), lr_gamma=0.3, weight_decay=1e-4,
                         optimizer="adam"),
    "cifar10-binary": Recipe(dataset="cifar10", arch="vgg8ab", binary=True, batch_size=64,
                             epochs=7, lr=2e-3, lr_milestones=(4, 6), lr_gamma=0.3,
                             weight_decay=5e-5, weight_decay_until=4, optimizer="adam",
                             binarize="xnor"),
}


# What the binary presets do not do by themselves (docs/fidelity.md, binary training).
BINARY_FROM_FP = ("the authors fine-tuned binary VGGs from full-precision ones (their fork's "
                  "ImageNet script always starts from a pretrained model, its CIFAR-100 script "
                  "with --pretrained); the binary presets start from random weights unless "
                  "--init FP_MODEL is given")


def preset(name: str) -> Recipe:
    """The recipe called `name`; ConfigError listing the presets otherwise."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}", f"use one of: {', '.join(PRESETS)}")
    return PRESETS[name]
