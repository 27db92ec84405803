"""VGG networks with average pooling *before* the ReLU (the paper's design).

Pooling placed before the nonlinearity is linear, so every nonlinearity becomes an IF neuron and no
spiking max-pool is needed. The module layout matches the original `vgg.py` exactly
(`features.N`, `classifier.N`), so the original repository's checkpoints load unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from bsnn.models.binary import BinaryConv2d, BinaryLinear


class VGGAvgBeforeReLU(nn.Module):
    """conv3x3 blocks -> avg-pool 2x2 -> ReLU, then Linear -> ReLU -> Linear; no bias, no BN.

    `blocks` lists each block's channel counts; dropout follows every ReLU except those after
    pooling; blocks from `ceil_from` on pool with ceil_mode (as the original VGG-15 does).
    With `binary`, every conv/linear but the first and the last is binary.
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
    ) -> None:
        super().__init__()
        channels, height, width = input_shape
        layers: list[nn.Module] = []
        first = True
        for b, block in enumerate(blocks):
            for i, out in enumerate(block):
                conv_cls = nn.Conv2d if (first or not binary) else BinaryConv2d
                layers.append(conv_cls(channels, out, 3, 1, 1, bias=False))
                first = False
                channels = out
                if i == len(block) - 1:
                    ceil = b >= ceil_from
                    layers += [nn.AvgPool2d(2, 2, 0, ceil_mode=ceil), nn.ReLU()]
                    height = -(-height // 2) if ceil else height // 2
                    width = -(-width // 2) if ceil else width // 2
                else:
                    layers += [nn.ReLU(), nn.Dropout(dropout)]
        if height < 1 or width < 1:
            raise ValueError(f"input {input_shape} is too small for {len(blocks)} pooling stages")
        self.features = nn.Sequential(*layers)
        hidden_cls = BinaryLinear if binary else nn.Linear
        self.classifier = nn.Sequential(
            nn.Dropout(dropout),
            hidden_cls(channels * height * width, hidden, bias=False),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes, bias=False),
        )
        self._initialize_weights()

    def _initialize_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.classifier(self.features(x).flatten(1))
