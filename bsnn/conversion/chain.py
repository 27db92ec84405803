"""Walk an ANN as a chain and cut it into groups at its ReLUs.

Linear ops between two ReLUs (conv, linear, avg-pool, flatten, BN folded into the preceding
conv/linear) form one group; each ReLU ends a group; dropout is the identity in evaluation.
A max-pool may follow a group's conv (before its ReLU, as in the pooling ablation's
VGG_15_max): it then takes, at every step, the max of that step's input currents over each
window, as the original's BindsNET fork does (its conversion puts a pass-through layer after the
conv, whose output, the conv's current, feeds `MaxPool2dConnection`, a plain max-pool of its
input). A max-pool of spikes (after a ReLU) is refused.
Anything else stops the conversion with the module's path and what to do — never a silent skip.
Binary layers are materialised as plain conv/linear holding their exact +-alpha weights.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from bsnn.errors import ConversionError
from bsnn.models.binary import BinaryLayer

WEIGHTED = (nn.Conv2d, nn.Linear)
LINEAR_OPS = (nn.AvgPool2d, nn.Flatten)
IDENTITY = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
Drop = Callable[[torch.Tensor, float], torch.Tensor]  # (activations, p) -> dropped out
BATCHNORM = (nn.BatchNorm1d, nn.BatchNorm2d)
POOLS = (nn.AvgPool2d, nn.MaxPool2d)

ADVICE = {
    nn.AdaptiveAvgPool2d: "use nn.AvgPool2d with a fixed kernel (the input size is known)",
    nn.AdaptiveMaxPool2d: "use nn.MaxPool2d with a fixed kernel, right after a conv",
}


@dataclass
class Group:
    """Linear ops ending at a ReLU (`relu=True`) or at the network's output."""

    ops: list[nn.Module] = field(default_factory=list)
    bias: torch.Tensor | None = None  # moved out of the last weighted op, added after all ops
    relu: bool = False
    binary: bool = False
    sources: list[str] = field(default_factory=list)
    # The model's dropouts, kept for the original's calibration only (it leaves them active):
    # (before which op: len(ops) means after all of them, before the ReLU; drop probability)
    dropouts: list[tuple[int, float]] = field(default_factory=list)

    @property
    def weighted(self) -> list[nn.Module]:
        return [op for op in self.ops if isinstance(op, WEIGHTED)]

    @property
    def max_pooled(self) -> bool:
        return any(isinstance(op, nn.MaxPool2d) for op in self.ops)

    @property
    def hops(self) -> int:
        """Layers the original's BindsNET network has for these ops: one per conv, linear and
        pooling (a conv before a pooling gets a pass-through layer, a pooling an IF layer)."""
        return sum(isinstance(op, WEIGHTED + POOLS) for op in self.ops)

    def forward(self, x: torch.Tensor, drop: Drop | None = None) -> torch.Tensor:
        """The group's output; `drop(x, p)` applies the model's dropouts where it has them
        (the original's calibration), else they are the identity they are at inference."""
        for i, op in enumerate(self.ops):
            x = self._dropped(x, i, drop)
            x = op(x)
        x = self._dropped(x, len(self.ops), drop)
        if self.bias is not None:
            x = x + self.bias.view(-1, *([1] * (x.dim() - 2)))
        return torch.relu(x) if self.relu else x


    def _dropped(self, x: torch.Tensor, position: int, drop: Drop | None) -> torch.Tensor:
        if drop is not None:
            for at, p in self.dropouts:
                if at == position:
                    x = drop(x, p)
        return x


def _leaves(model: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """The modules in execution order: nn.Sequential in order; a features/classifier model as
    features, flatten, classifier (the VGG convention); a leaf as itself."""
    if isinstance(model, nn.Sequential):
        out = []
        for name, child in model.named_children():
            out += _leaves(child, f"{prefix}{name}.")
        return out
    if isinstance(model, nn.DataParallel):
        return _leaves(model.module, prefix + "module.")
    children = dict(model.named_children())
    if not children:
        return [(prefix.rstrip("."), model)]
    if set(children) >= {"features", "classifier"}:
        extra = set(children) - {"features", "classifier"}
        if extra:
            raise ConversionError(
                f"{type(model).__name__} has modules outside features/classifier: {sorted(extra)}",
                "convert a plain chain: put every module into features or classifier",
            )
        return [
            *_leaves(model.features, prefix + "features."),
            (prefix + "flatten", nn.Flatten()),
            *_leaves(model.classifier, prefix + "classifier."),
        ]
    raise ConversionError(
        f"cannot walk {prefix.rstrip('.') or 'the model'} ({type(model).__name__}): "
        "its forward is not a known chain",
        "build the model from nn.Sequential, or as features + classifier Sequentials",
    )


def _plain(op: nn.Module) -> nn.Module:
    """A copy with binary weights materialised (exactly +-alpha) and no bias."""
    if isinstance(op, nn.Conv2d):
        new: nn.Module = nn.Conv2d(op.in_channels, op.out_channels, op.kernel_size, op.stride,
                                   op.padding, op.dilation, op.groups, bias=False,
                                   padding_mode=op.padding_mode)
    else:
        new = nn.Linear(op.in_features, op.out_features, bias=False)
    weight = op.binary_weight() if isinstance(op, BinaryLayer) else op.weight
    new.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    return new


def _fold_bn(group: Group, bn: nn.Module, path: str) -> None:
    """y = gamma (x - mu) / sigma + beta folded into the group's last conv/linear."""
    weighted = group.weighted
    if not weighted:
        raise ConversionError(f"{path} (BatchNorm) has no conv/linear before it to fold into",
                              "place BatchNorm right after a conv or linear layer")
    if group.max_pooled:  # a negative gamma does not commute with the max
        raise ConversionError(f"{path} (BatchNorm) follows a MaxPool2d",
                              "place BatchNorm between the conv and the MaxPool2d")
    op = weighted[-1]
    if op.weight.shape[0] != bn.num_features:
        raise ConversionError(f"{path}: BatchNorm over {bn.num_features} channels follows a layer "
                              f"with {op.weight.shape[0]}", "check the model definition")
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else \
        1 / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(scale)
    op.weight.data.mul_(scale.view(-1, *([1] * (op.weight.dim() - 1))))
    bias = group.bias if group.bias is not None else torch.zeros_like(scale)
    group.bias = (bias - bn.running_mean) * scale + shift


def _check_max_pool(group: Group, path: str) -> None:
    """A max-pool converts only right after the group's conv (the max of its currents)."""
    if not group.weighted or not isinstance(group.ops[-1], nn.Conv2d):
        raise ConversionError(
            f"unsupported layer {path} (MaxPool2d): a max-pool of spikes (after a ReLU or not "
            "right after a conv) has no converter",
            "place MaxPool2d right after the conv, before the ReLU (as VGG_15_max, --arch "
            "vgg15max), or use AvgPool2d")


def extract_chain(model: nn.Module) -> list[Group]:
    """Cut the model into groups; raise ConversionError on anything not convertible."""
    groups: list[Group] = []
    current = Group()
    for path, module in _leaves(model):
        if isinstance(module, nn.ReLU):
            if not current.ops:
                raise ConversionError(f"{path} (ReLU) follows another ReLU or starts the model",
                                      "remove the redundant ReLU")
            current.relu = True
            current.sources.append(path)
            groups.append(current)
            current = Group()
        elif isinstance(module, WEIGHTED):
            if current.bias is not None:
                raise ConversionError(
                    f"{path}: a second conv/linear after a biased or BN-folded one without a "
                    "ReLU between them", "merge the two linear layers or add a ReLU")
            if current.max_pooled:
                raise ConversionError(f"{path}: a conv/linear after a MaxPool2d without a ReLU "
                                      "between them", "add a ReLU after the MaxPool2d")
            current.ops.append(_plain(module))
            current.binary = current.binary or isinstance(module, BinaryLayer)
            if module.bias is not None:
                current.bias = module.bias.detach().clone()
            current.sources.append(path)
        elif isinstance(module, BATCHNORM):
            _fold_bn(current, module, path)
            current.sources.append(path)
        elif isinstance(module, LINEAR_OPS):
            current.ops.append(copy.deepcopy(module))
            current.sources.append(path)
        elif isinstance(module, nn.MaxPool2d):
            _check_max_pool(current, path)
            current.ops.append(copy.deepcopy(module))
            current.sources.append(path)
        elif isinstance(module, IDENTITY):
            if type(module) is nn.Dropout and module.p > 0:
                current.dropouts.append((len(current.ops), float(module.p)))
            continue
        else:
            advice = ADVICE.get(type(module), "bsnn converts conv, linear, avg-pool, max-pool "
                                "(after a conv), flatten, batch-norm, dropout and ReLU; "
                                "rebuild the model from those")
            raise ConversionError(f"unsupported layer {path} ({type(module).__name__})", advice)
    if not current.weighted:
        raise ConversionError("the model does not end with a conv or linear layer",
                              "end the model with its classifier's linear layer (no ReLU after)")
    groups.append(current)
    if len(groups) < 2:
        raise ConversionError("the model has no ReLU, so there is nothing to make spike",
                              "convert a network with at least one ReLU")
    return groups


def chain_forward(groups: list[Group], x: torch.Tensor, keep: bool = False,
                  drop: Drop | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The ANN as the chain computes it; with `keep`, every ReLU output too; with `drop`, its
    dropouts active (see Group.forward)."""
    acts = []
    for g in groups:
        x = g.forward(x, drop)
        if keep and g.relu:
            acts.append(x)
    return x, acts
