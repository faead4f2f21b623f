"""The paper's U-Net: architecture, shapes, parameter count, initialisation."""

import math

import pytest
import torch

from napari_unet.core.model import UNet, nearest_valid_sizes, valid_input_shape, valid_output_shape


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def test_paper_parameter_count_and_shape():
    net = UNet(in_channels=1, num_classes=2, depth=4, base_channels=64)
    assert n_params(net) == 31_030_658
    assert net.output_shape((572, 572)) == (388, 388)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    upconvs = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(convs) + len(upconvs) == 23  # the paper's 23 convolutional layers
    assert len(upconvs) == 4 and all(m.kernel_size == (2, 2) for m in upconvs)
    assert not any(isinstance(m, torch.nn.Linear) for m in net.modules())
    assert all(c.padding == (0, 0) for c in convs)


def test_paper_forward_572_gives_388():
    net = UNet(base_channels=4).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 1, 572, 572))
    assert out.shape == (1, 2, 388, 388)


@pytest.mark.parametrize("depth", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("extra", [0, 1, 3])
def test_output_shape_matches_forward(depth, extra):
    h = valid_input_shape(1, depth)[0] + extra * 2**depth
    w = valid_input_shape(1, depth)[0] + (extra + 1) * 2**depth
    net = UNet(in_channels=2, num_classes=3, depth=depth, base_channels=2, dropout=0).eval()
    with torch.no_grad():
        out = net(torch.zeros(2, 2, h, w))
    assert out.shape == (2, 3, *net.output_shape((h, w)))


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_same_padding_keeps_size(depth):
    side = 2**depth * 3
    net = UNet(depth=depth, base_channels=2, padding="same").eval()
    with torch.no_grad():
        out = net(torch.zeros(1, 1, side, 2 * side))
    assert out.shape == (1, 2, side, 2 * side)
    assert net.margin == 0


def test_valid_input_shape_is_smallest_valid():
    for depth in range(5):
        for s in range(1, 300, 7):
            (v,) = valid_input_shape(s, depth)
            assert v >= s
            valid_output_shape((v,), depth)  # does not raise
            for smaller in range(s, v):
                with pytest.raises(ValueError):
                    valid_output_shape((smaller,), depth)


def test_invalid_size_error_names_nearest_sizes():
    net = UNet(base_channels=2)
    with pytest.raises(ValueError, match="556 or 572"):
        net.output_shape((570, 572))
    with pytest.raises(ValueError, match="nearest valid sizes"):
        net(torch.zeros(1, 1, 570, 572))
    assert nearest_valid_sizes(100) == [188]
    assert nearest_valid_sizes(50, padding="same") == [48, 64]


def test_margin_matches_shapes():
    net = UNet(base_channels=2)
    assert net.margin == (572 - 388) // 2


def test_he_initialisation_std():
    torch.manual_seed(0)
    net = UNet(base_channels=64, depth=2)
    conv = net.down[1][2]  # 3x3, 128 -> 128 channels: 147k weights
    expected = math.sqrt(2.0 / (3 * 3 * 128))
    assert abs(conv.weight.std().item() - expected) / expected < 0.1
    assert abs(conv.weight.mean().item()) < 0.1 * expected
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d):
            assert torch.count_nonzero(m.bias) == 0
            n = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
            if isinstance(m, torch.nn.ConvTranspose2d):  # 2x2 stride 2: each output sees C_in
                n = m.in_channels
            if m.weight.numel() > 20_000:
                std = m.weight.std().item()
                assert abs(std - math.sqrt(2 / n)) / math.sqrt(2 / n) < 0.1


def test_forward_backward_cpu():
    net = UNet(depth=2, base_channels=4)
    x = torch.randn(2, 1, 60, 60)
    out = net(x)
    loss = torch.nn.functional.cross_entropy(out, torch.zeros(2, *out.shape[-2:], dtype=torch.long))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_dropout_only_in_training_and_disableable():
    net = UNet(depth=1, base_channels=4, dropout=0.5)
    assert isinstance(net.dropout, torch.nn.Dropout2d)
    x = torch.randn(1, 1, 20, 20)
    net.eval()
    with torch.no_grad():
        assert torch.equal(net(x), net(x))
    assert isinstance(UNet(depth=1, base_channels=4, dropout=0).dropout, torch.nn.Identity)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"in_channels": 0}, "in_channels"),
        ({"num_classes": 1.5}, "num_classes"),
        ({"depth": -1}, "depth"),
        ({"padding": "reflect"}, "padding"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**kwargs)


def test_wrong_channel_count_is_explained():
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        UNet(in_channels=3, depth=1, base_channels=2)(torch.zeros(1, 1, 20, 20))


def test_upconvolution_he_std_empirical():
    """A 2x2 stride-2 up-convolution gives each output neuron C_in inputs: std = sqrt(2 / C_in),
    so unit-variance inputs give outputs of variance 2 (He et al.), not 0.5 as with N = 4 C_in."""
    torch.manual_seed(0)
    net = UNet(base_channels=32, depth=2)
    ups = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(ups) == 2
    for up in ups:
        expected = math.sqrt(2.0 / up.in_channels)
        assert abs(up.weight.std().item() - expected) / expected < 0.05
        x = torch.randn(4, up.in_channels, 16, 16)
        with torch.no_grad():
            var = up(x).var().item()
        assert abs(var - 2.0) < 0.2
