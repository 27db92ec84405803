"""The optimiser a recipe trains with and its per-epoch schedule.

Apart from bsnn.train's loops because it is the one place that knows how binary layers' shadow
weights are optimised: with `binarize="xnor"` they get no weight decay and Adam's eps / 1e9, the
steps the authors' x1e9 gradients gave. The learning rate and weight decay are pure functions of
the epoch, so a resumed run only needs the epoch number to be on the same schedule.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bsnn.models.binary import binary_layers
from bsnn.recipes import Recipe

# The authors multiplied the binary layers' gradients by 1e9 before Adam's step. Adam's step is
# the same for any gradient scale except through its eps and its L2 weight decay (added to the
# gradient), which the 1e9 made negligible for those weights. bsnn keeps gradients at their
# size and gives those weights no weight decay and eps / 1e9 instead: the same steps.
THEIR_GRADIENT_SCALE = 1e9
ADAM_EPS = 1e-8


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer:
    """SGD with momentum or Adam; binary layers hand their full-precision shadow weights here.

    With `binarize="xnor"` those weights form a second group without weight decay (its `decay`
    is False: the schedule leaves it at 0) and with Adam's eps / 1e9: the steps the authors'
    x1e9 gradients gave (see THEIR_GRADIENT_SCALE)."""
    groups = _param_groups(model, recipe)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr, betas=recipe.betas, eps=ADAM_EPS,
                                weight_decay=recipe.weight_decay)
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum,
                           weight_decay=recipe.weight_decay)


def _param_groups(model: nn.Module, recipe: Recipe) -> list[dict[str, Any]]:
    xnor = recipe.binary and recipe.binarize == "xnor"
    shadow = {id(layer.weight) for layer in binary_layers(model)} if xnor else set()
    groups: list[dict[str, Any]] = [
        {"params": [p for p in model.parameters() if id(p) not in shadow], "decay": True}]
    if shadow:
        groups.append({"params": [p for p in model.parameters() if id(p) in shadow],
                       "decay": False, "weight_decay": 0.0,
                       "eps": ADAM_EPS / THEIR_GRADIENT_SCALE})
    return groups


def apply_schedule(optimizer: torch.optim.Optimizer, recipe: Recipe, epoch: int) -> float:
    """Set the epoch's learning rate and weight decay in every group (weight decay stays 0 in
    a group whose `decay` is False: xnor's shadow weights); return the rate."""
    lr = recipe.lr_at(epoch)
    for group in optimizer.param_groups:
        group["lr"] = lr
        group["weight_decay"] = recipe.weight_decay_at(epoch) if group.get("decay", True) else 0.0
    return lr
