"""The VGGs keep the original repository's layout; binary layers compute exactly sign(W) * alpha."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bsnn.errors import ConfigError
from bsnn.models import ARCHS, DEFAULT_ARCH, BinaryConv2d, BinaryLinear, build_model
from bsnn.models.binary import binarize

Layout = list[tuple[str, object]]


def _original_features(pool: str = "AvgPool2d", relu_first: bool = False) -> Layout:
    """The original's `features`, module by module: conv (in, out), pool ceil_mode.

    The paper's vgg.py (`vgg_15_avg_before_relu`) and, in the first author's XNOR-Net-PyTorch
    fork (CIFAR_100/models/vgg.py), `VGG_15_max` (MaxPool2d instead, same places) and
    `VGG_15_avg` (ReLU then AvgPool2d at each block's end, no dropout between them).
    """
    layers: Layout = []
    channels = 3
    blocks = [(64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)]
    for b, block in enumerate(blocks):
        for i, out in enumerate(block):
            layers.append(("Conv2d", (channels, out)))
            channels = out
            if i < len(block) - 1:
                layers += [("ReLU", None), ("Dropout", 0.1)]
        end = [(pool, b >= 2), ("ReLU", None)]
        layers += end[::-1] if relu_first else end
    return layers


def _describe(module: nn.Module) -> tuple[str, object]:
    if isinstance(module, nn.Conv2d):
        assert module.kernel_size == (3, 3) and module.padding == (1, 1) and module.bias is None
        return "Conv2d", (module.in_channels, module.out_channels)
    if isinstance(module, nn.AvgPool2d | nn.MaxPool2d):
        assert module.kernel_size in (2, (2, 2)) and module.stride in (2, (2, 2))
        assert module.padding in (0, (0, 0))
        return type(module).__name__, module.ceil_mode
    if isinstance(module, nn.Dropout):
        return "Dropout", module.p
    return type(module).__name__, None


@pytest.fixture(scope="module")
def cifar_vgg15() -> nn.Module:
    return build_model("vgg15ab", 100, (3, 32, 32))


def test_vgg15ab_features_match_the_original_module_by_module(cifar_vgg15: nn.Module) -> None:
    assert [_describe(m) for m in cifar_vgg15.features] == _original_features()


def test_vgg15ab_state_dict_keys_are_the_originals(cifar_vgg15: nn.Module) -> None:
    conv_indices = [0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 30, 33, 36]
    expected = [f"features.{i}.weight" for i in conv_indices]
    expected += ["classifier.1.weight", "classifier.4.weight"]
    assert list(cifar_vgg15.state_dict()) == expected


ABLATION = {"vgg15avg": ("AvgPool2d", True), "vgg15max": ("MaxPool2d", False)}


@pytest.mark.parametrize("arch", sorted(ABLATION))
@pytest.mark.parametrize("binary", [False, True])
def test_ablation_vggs_match_the_forks_module_by_module(arch: str, binary: bool) -> None:
    net = build_model(arch, 100, (3, 32, 32), binary=binary)
    assert [_describe(m) for m in net.features] == _original_features(*ABLATION[arch])
    classifier = [type(m).__name__ for m in net.classifier]
    assert classifier == ["Dropout", "BinaryLinear" if binary else "Linear", "ReLU", "Dropout",
                          "Linear"]
    # the original's checkpoints load: the same keys and shapes as the paper's VGG-15
    want = build_model("vgg15ab", 100, (3, 32, 32)).state_dict()
    got = net.state_dict()
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    with torch.no_grad():
        assert net.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_ablation_vggs_on_imagenet_shapes() -> None:
    for arch in ABLATION:
        net = build_model(arch, 1000, (3, 224, 224))
        assert net.state_dict()["classifier.1.weight"].shape == (4096, 512 * 7 * 7), arch


def test_avg_pool_comes_before_relu_in_every_block(cifar_vgg15: nn.Module) -> None:
    mods = list(cifar_vgg15.features)
    pools = [i for i, m in enumerate(mods) if isinstance(m, nn.AvgPool2d)]
    assert len(pools) == 5
    for i in pools:
        assert isinstance(mods[i - 1], nn.Conv2d) and isinstance(mods[i + 1], nn.ReLU)
    assert not any(isinstance(m, nn.MaxPool2d | nn.BatchNorm2d) for m in cifar_vgg15.modules())


def test_vgg15ab_cifar100_shapes(cifar_vgg15: nn.Module) -> None:
    sd = cifar_vgg15.state_dict()
    assert sd["classifier.1.weight"].shape == (4096, 512)
    assert sd["classifier.4.weight"].shape == (100, 4096)
    assert sum(k.startswith("features.") for k in sd) == 13
    cifar_vgg15.eval()
    with torch.no_grad():
        assert cifar_vgg15(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_vgg15ab_imagenet_shapes() -> None:
    net = build_model("vgg15ab", 1000, (3, 224, 224)).eval()
    assert net.state_dict()["classifier.1.weight"].shape == (4096, 512 * 7 * 7)
    assert net.state_dict()["classifier.4.weight"].shape == (1000, 4096)
    with torch.no_grad():
        assert net.features(torch.randn(1, 3, 224, 224)).shape == (1, 512, 7, 7)


def test_default_archs_build_for_their_data_sets() -> None:
    shapes = {"digits": ((1, 8, 8), 10), "cifar10": ((3, 32, 32), 10)}
    for dataset, (shape, classes) in shapes.items():
        net = build_model(DEFAULT_ARCH[dataset], classes, shape).eval()
        with torch.no_grad():
            assert net(torch.randn(3, *shape)).shape == (3, classes)
    assert set(DEFAULT_ARCH.values()) <= set(ARCHS)


def _weight_with_zeros(*shape: int) -> torch.Tensor:
    w = torch.randn(*shape) * 0.5
    w.view(-1)[::7] = 0.0  # sign(0) must be +1
    return w


def _used_weight(w: torch.Tensor) -> torch.Tensor:
    """sign(W) * alpha written out independently of bsnn: sign(0) = +1, alpha = mean |W|."""
    signs = torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))
    alpha = w.abs().reshape(w.shape[0], -1).mean(dim=1)
    return signs * alpha.view(-1, *([1] * (w.dim() - 1)))


def test_binary_conv_forward_is_exactly_conv_with_sign_times_alpha() -> None:
    torch.manual_seed(0)
    layer = BinaryConv2d(4, 6, 3, 1, 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(_weight_with_zeros(6, 4, 3, 3))
    x = torch.randn(2, 4, 5, 5)
    expected = F.conv2d(x, _used_weight(layer.weight.detach()), None, 1, 1)
    assert torch.equal(layer(x), expected)


def test_binary_linear_forward_is_exactly_linear_with_sign_times_alpha() -> None:
    torch.manual_seed(1)
    layer = BinaryLinear(12, 5, bias=False)
    with torch.no_grad():
        layer.weight.copy_(_weight_with_zeros(5, 12))
    x = torch.randn(3, 12)
    assert torch.equal(layer(x), F.linear(x, _used_weight(layer.weight.detach())))


def test_straight_through_gradient_reaches_the_shadow_weights() -> None:
    """dL/dW = alpha * G * [|W| <= 1] (sign, straight through) + sign(W) * sum(G sign(W)) / n."""
    torch.manual_seed(2)
    w = (torch.randn(3, 8) * 1.2).requires_grad_()  # some |w| > 1
    upstream = torch.randn(3, 8)
    (binarize(w) * upstream).sum().backward()
    wd = w.detach()
    n = wd.shape[1]
    alpha = wd.abs().mean(dim=1, keepdim=True)
    through_sign = alpha * upstream * (wd.abs() <= 1)
    through_alpha = torch.sign(wd) * (upstream * torch.sign(wd)).sum(1, keepdim=True) / n
    assert w.grad is not None
    assert torch.allclose(w.grad, through_sign + through_alpha, atol=1e-6)
    outside = wd.abs() > 1
    assert outside.any() and (~outside).any()
    # where |W| > 1 the straight-through part is cut: only the scale's gradient is left
    assert torch.allclose(w.grad[outside], through_alpha[outside], atol=1e-6)


@pytest.mark.parametrize("layer", [BinaryConv2d(3, 5, 3, padding=1, bias=False),
                                   BinaryLinear(7, 4, bias=False)], ids=["conv", "linear"])
def test_binary_layers_give_the_straight_through_gradient(layer: nn.Module) -> None:
    """The shadow weights' gradient is the hand-derived one: with G the gradient of the binary
    weights B = sign(W) alpha (alpha = mean |W| per output channel, n weights each),
    dL/dW = alpha G [|W| <= 1] + sign(W) sum(sign(W) G) / n."""
    torch.manual_seed(3)
    with torch.no_grad():
        layer.weight.normal_()  # about a third |w| > 1: the straight-through mask matters
    x = torch.randn(2, 3, 6, 6) if isinstance(layer, nn.Conv2d) else torch.randn(2, 7)
    out = layer(x)
    r = torch.randn_like(out)
    (out * r).sum().backward()

    w = layer.weight.detach()
    n = w[0].numel()
    dims = tuple(range(1, w.dim()))
    alpha = w.abs().mean(dims, keepdim=True)
    signs = torch.where(w >= 0, 1.0, -1.0)
    binary = (signs * alpha).requires_grad_()
    forward = (F.conv2d(x, binary, padding=1) if isinstance(layer, nn.Conv2d)
               else F.linear(x, binary))
    (g,) = torch.autograd.grad((forward * r).sum(), binary)
    expected = alpha * g * (w.abs() <= 1) + torch.sign(w) * (torch.sign(w) * g).sum(
        dims, keepdim=True) / n
    assert (w.abs() > 1).any() and (w.abs() <= 1).any()
    torch.testing.assert_close(layer.weight.grad, expected)


def test_every_parameter_of_a_binary_model_gets_a_gradient() -> None:
    torch.manual_seed(3)
    net = build_model("vgg6ab", 10, (1, 8, 8), binary=True)
    loss = F.cross_entropy(net(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("arch, shape", [("vgg15ab", (3, 32, 32)), ("vgg6ab", (1, 8, 8))])
def test_first_and_last_layers_stay_full_precision(arch: str, shape: tuple[int, int, int]) -> None:
    net = build_model(arch, 10, shape, binary=True)
    weighted = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    assert type(weighted[0]) is nn.Conv2d
    assert type(weighted[-1]) is nn.Linear
    assert all(isinstance(m, BinaryConv2d | BinaryLinear) for m in weighted[1:-1])
    assert list(net.state_dict()) == list(build_model(arch, 10, shape).state_dict())


def test_binary_weight_is_the_weight_the_forward_uses() -> None:
    """`binary_weight()` is what conversion deploys: exactly +-alpha per output channel, the
    weight the forward pass multiplies by (sign(0) = +1 included)."""
    torch.manual_seed(4)
    net = build_model("vgg6ab", 10, (1, 8, 8), binary=True)
    binary_layers = [m for m in net.modules() if isinstance(m, BinaryConv2d | BinaryLinear)]
    assert len(binary_layers) == 4
    for layer in binary_layers:
        with torch.no_grad():
            layer.weight.view(-1)[::5] = 0.0
        deployed = layer.binary_weight()
        used = _used_weight(layer.weight.detach())
        assert torch.equal(deployed, used)
        assert torch.equal(deployed, binarize(layer.weight).detach())
        magnitude = deployed.abs().flatten(1)
        assert torch.equal(magnitude, magnitude[:, :1].expand_as(magnitude)), "one alpha/channel"
        zeros = layer.weight.detach() == 0
        assert zeros.any() and (deployed[zeros] > 0).all(), "sign(0) must be +1"
        x = torch.randn(2, *((layer.in_channels, 4, 4) if isinstance(layer, nn.Conv2d)
                             else (layer.in_features,)))
        plain = (F.conv2d(x, deployed, None, 1, 1) if isinstance(layer, nn.Conv2d)
                 else F.linear(x, deployed))
        assert torch.equal(layer(x), plain)


def _widths(net: nn.Module) -> list[tuple[int, int]]:
    layers = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    return [(m.weight.shape[1], m.weight.shape[0]) for m in layers]


@pytest.mark.parametrize("binary", [False, True])
def test_width_scales_conv_and_hidden_widths_but_not_input_or_classes(binary: bool) -> None:
    net = build_model("vgg15ab", 100, (3, 32, 32), binary=binary, width=0.25)
    convs = [16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128]
    ins = [3, *convs[:-1]]
    assert _widths(net) == [*zip(ins, convs, strict=True), (128, 1024), (1024, 100)]
    assert [type(m) for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear)] == [
        type(m) for m in build_model("vgg15ab", 100, (3, 32, 32), binary=binary).modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    with torch.no_grad():
        assert net.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_width_rounds_and_keeps_at_least_one_channel() -> None:
    assert _widths(build_model("vgg6ab", 10, (1, 8, 8), width=0.3)) == [
        (1, 10), (10, 10), (10, 19), (19, 19), (19 * 2 * 2, 38), (38, 10)
    ]
    assert _widths(build_model("vgg6ab", 10, (1, 8, 8), width=0.001))[0] == (1, 1)


def test_width_one_builds_todays_model_exactly() -> None:
    torch.manual_seed(5)
    a = build_model("vgg6ab", 10, (1, 8, 8), binary=True)
    torch.manual_seed(5)
    b = build_model("vgg6ab", 10, (1, 8, 8), binary=True, width=1.0)
    assert list(a.state_dict()) == list(b.state_dict())
    assert all(torch.equal(a.state_dict()[k], b.state_dict()[k]) for k in a.state_dict())
    assert _widths(a)[:2] == [(1, 32), (32, 32)]


def test_width_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="width"):
        build_model("vgg6ab", 10, (1, 8, 8), width=0)
