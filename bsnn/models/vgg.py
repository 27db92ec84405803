"""VGG networks of the paper and of its pooling ablation, in the original modules' layout.

The paper's design puts average pooling *before* the ReLU: pooling is then linear, so every
nonlinearity becomes an IF neuron and no spiking max-pool is needed. The first author's
XNOR-Net-PyTorch fork (CIFAR_100/models/vgg.py) also defines the ablation's variants, built here
from the same blocks: `VGG_15_avg` (ReLU, then average pooling, with no dropout between them) and
`VGG_15_max` (max pooling before the ReLU, like the paper's design). The module layout matches the
originals exactly (`features.N`, `classifier.N`: the conv indices are the same in all three), so
the original checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from bsnn.models.binary import BinaryConv2d, BinaryLinear

POOLINGS = ("avg-before-relu", "avg-after-relu", "max-before-relu")


def scaled_width(channels: int, width: float) -> int:
    """`channels` scaled by the width multiplier, rounded, at least 1 (width 1 keeps it exact)."""
    if not width > 0:
        raise ValueError(f"width must be > 0, got {width}")
    return max(1, round(channels * width))


def _block_end(pooling: str, ceil: bool) -> list[nn.Module]:
    """The modules after a block's last conv: pooling and ReLU in the variant's order."""
    if pooling == "max-before-relu":
        return [nn.MaxPool2d(2, 2, 0, ceil_mode=ceil), nn.ReLU()]
    pool = nn.AvgPool2d(2, 2, 0, ceil_mode=ceil)
    return [nn.ReLU(), pool] if pooling == "avg-after-relu" else [pool, nn.ReLU()]


class VGG(nn.Module):
    """conv3x3 blocks, each ending in 2x2 pooling, then Linear -> ReLU -> Linear; no bias, no BN.

    `blocks` lists each block's channel counts; `pooling` places the pooling and its kind (one of
    POOLINGS); dropout follows every ReLU that is not at a block's end; blocks from `ceil_from`
    on pool with ceil_mode (as the original VGG-15 does). With `binary`, every conv/linear but the
    first and the last is binary. `width` scales every conv and hidden width (rounded, at least 1).
    """

    def __init__(
        self,
        blocks: Sequence[Sequence[int]],
        input_shape: tuple[int, int, int],
        num_classes: int,
        hidden: int,
        *,
        binary: bool = False,
        dropout: float = 0.1,
        ceil_from: int = 2,
        width: float = 1.0,
        pooling: str = "avg-before-relu",
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling {pooling!r} is not one of {', '.join(POOLINGS)}")
        blocks = [[scaled_width(c, width) for c in block] for block in blocks]
        channels, height, wide = input_shape
        layers: list[nn.Module] = []
        for b, block in enumerate(blocks):
            for i, out in enumerate(block):
                conv_cls = nn.Conv2d if (not layers or not binary) else BinaryConv2d
                layers.append(conv_cls(channels, out, 3, 1, 1, bias=False))
                channels = out
                if i == len(block) - 1:
                    ceil = b >= ceil_from
                    layers += _block_end(pooling, ceil)
                    height = -(-height // 2) if ceil else height // 2
                    wide = -(-wide // 2) if ceil else wide // 2
                else:
                    layers += [nn.ReLU(), nn.Dropout(dropout)]
        if height < 1 or wide < 1:
            raise ValueError(f"input {input_shape} is too small for {len(blocks)} pooling stages")
        self.features = nn.Sequential(*layers)
        self.classifier = _classifier(channels * height * wide, scaled_width(hidden, width),
                                      num_classes, binary, dropout)
        self._initialize_weights()

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.features(x).flatten(1))


def _classifier(features: int, hidden: int, num_classes: int, binary: bool,
                dropout: float) -> nn.Sequential:
    """Dropout, Linear -> ReLU, dropout, Linear: the originals' classifier (no bias)."""
    hidden_cls = BinaryLinear if binary else nn.Linear
    return nn.Sequential(
        nn.Dropout(dropout),
        hidden_cls(features, hidden, bias=False),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes, bias=False),
    )
