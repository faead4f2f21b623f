"""The 3D U-Net (Çiçek et al. 2016): parameter count, shapes, anisotropic pooling, init, BN."""

import math

import numpy as np
import pytest
import torch

from napari_unet.core.model import (
    UNet,
    anisotropic_pool,
    he_init_,
    inflate_to_3d,
    nearest_valid_sizes,
    valid_input_shape,
    valid_output_shape,
)


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def cicek_2016_parameters_by_hand() -> dict[str, int]:
    """The 3D U-Net paper's network (Sect. 2, Fig. 1), counted layer by layer.

    Analysis path: 3 input channels; per level two 3×3×3 convolutions 32/64, 64/128, 128/256 and
    256/512 at the bottom, 2×2×2 max pooling in between (3 poolings). Synthesis path: 2×2×2
    up-convolutions keeping the channels (512, 256, 128), concatenation with the skip (256, 128,
    64 channels), two 3×3×3 convolutions each (256, 128, 64). A 1×1×1 convolution to 3 labels.
    BN before each ReLU. The paper states 19,069,955 parameters: the convolutions' weights and
    biases, the up-convolutions' weights (no bias) and no batch-normalisation parameters.
    """
    convs = [(3, 32), (32, 64), (64, 64), (64, 128), (128, 128), (128, 256),  # analysis
             (256, 256), (256, 512),  # bottom
             (512 + 256, 256), (256, 256), (256 + 128, 128), (128, 128), (128 + 64, 64), (64, 64)]
    upconvs = [(512, 512), (256, 256), (128, 128)]
    return {
        "conv_weights": sum(27 * a * b for a, b in convs),
        "conv_biases": sum(b for _, b in convs),
        "upconv_weights": sum(8 * a * b for a, b in upconvs),
        "upconv_biases": sum(b for _, b in upconvs),
        "head": 64 * 3 + 3,
        "bn_affine": 2 * sum(b for _, b in convs),  # gamma and beta per channel
    }


def cicek_net(**kwargs) -> UNet:
    options = {"dropout": 0, "ndim": 3, "norm": "batch", "scheme": "3d-unet"}
    return UNet(3, 3, depth=3, base_channels=32, **{**options, **kwargs})


def test_cicek_2016_parameter_count_and_tile():
    parts = cicek_2016_parameters_by_hand()
    paper = parts["conv_weights"] + parts["conv_biases"] + parts["upconv_weights"] + parts["head"]
    assert paper == 19_069_955  # "The architecture has 19069955 parameters in total."
    net = cicek_net()
    # Ours also has the up-convolutions' biases (as the 2D network) and BN's gamma and beta.
    assert n_params(net) == paper + parts["upconv_biases"] + parts["bn_affine"] == 19_075_523
    assert n_params(cicek_net(norm=None)) == paper + parts["upconv_biases"]
    assert net.output_shape((132, 132, 116)) == (44, 44, 28)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    ups = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose3d)]
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(convs) == 15 and len(ups) == 3 and len(bns) == 14
    assert all(c.kernel_size == (3, 3, 3) and c.padding == (0, 0, 0) for c in convs[:-1])
    assert convs[-1].kernel_size == (1, 1, 1)
    assert all(u.kernel_size == (2, 2, 2) == u.stride for u in ups)
    assert [u.in_channels for u in ups] == [512, 256, 128] == [u.out_channels for u in ups]


def test_cicek_forward_at_small_width_gives_the_paper_output():
    net = UNet(3, 3, depth=3, base_channels=1, dropout=0, ndim=3, norm="batch",
               scheme="3d-unet").eval()
    with torch.no_grad():
        out = net(torch.randn(1, 3, 116, 132, 132))
    assert out.shape == (1, 3, 28, 44, 44)


POOLS = {
    "iso": lambda d: None,
    "z-late": lambda d: ((1, 2, 2),) + ((2, 2, 2),) * (d - 1) if d else (),
    "mixed": lambda d: tuple((2, 1, 2) if i % 2 else (1, 2, 2) for i in range(d)),
}


@pytest.mark.parametrize("depth", [0, 1, 2, 3])
@pytest.mark.parametrize("pool", sorted(POOLS))
@pytest.mark.parametrize("extra", [(0, 0, 0), (1, 0, 2)])
def test_output_shape_matches_forward_3d(depth, pool, extra):
    net = UNet(in_channels=2, num_classes=3, depth=depth, base_channels=1, dropout=0, ndim=3,
               pool=POOLS[pool](depth)).eval()
    smallest = net.valid_input_shape(1)
    steps = [math.prod(f[a] for f in net.pool_factors) for a in range(3)]
    shape = tuple(s + e * st for s, e, st in zip(smallest, extra, steps, strict=True))
    with torch.no_grad():
        out = net(torch.zeros(1, 2, *shape))
    assert out.shape == (1, 3, *net.output_shape(shape))
    assert net.margins == tuple((s - o) // 2 for s, o in zip(shape, out.shape[2:], strict=True))


@pytest.mark.parametrize("pool", [None, ((1, 2, 2), (2, 2, 2))])
def test_same_padding_3d_keeps_size(pool):
    net = UNet(depth=2, base_channels=1, ndim=3, padding="same", pool=pool).eval()
    shape = net.valid_input_shape((5, 9, 13))
    assert shape == ((8, 12, 16) if pool is None else (6, 12, 16))
    with torch.no_grad():
        assert net(torch.zeros(1, 1, *shape)).shape == (1, 2, *shape)
    assert net.margins == (0, 0, 0) and net.margin == 0


@pytest.mark.parametrize("pool", [None, ((1, 2, 2), (1, 2, 2), (2, 2, 2)), (1, 2, 1)])
def test_valid_input_shape_is_smallest_valid_per_axis(pool):
    per_axis = [tuple(f if isinstance(f, int) else f[a] for f in (pool or (2, 2, 2))) for a in range(3)]
    for s in range(1, 120, 5):
        shape = valid_input_shape((s, s, s), 3, pool=pool)
        valid_output_shape(shape, 3, pool=pool)  # does not raise
        for axis, (v, factors) in enumerate(zip(shape, per_axis, strict=True)):
            assert v >= s
            assert nearest_valid_sizes(v, depth=3, pool=factors)[-1] == v
            for smaller in range(s, v):
                bad = list(shape)
                bad[axis] = smaller
                with pytest.raises(ValueError, match=f"axis {axis}"):
                    valid_output_shape(tuple(bad), 3, pool=pool)


def test_invalid_3d_size_error_names_nearest_sizes_per_axis():
    net = UNet(depth=2, base_channels=1, ndim=3, pool=((1, 2, 2), (2, 2, 2)))
    # z: factors (1, 2) → sizes 2·m + 8 (at least 26); y/x: factors (2, 2) → 4·m + 12 (>= 44).
    with pytest.raises(ValueError) as err:
        net.output_shape((29, 44, 50))
    text = str(err.value)
    assert "axis 1" not in text
    assert "29 along spatial axis 0" in text and "nearest valid sizes: 28 or 30" in text
    assert "50 along spatial axis 2" in text and "nearest valid sizes: 48 or 52" in text
    for z in (28, 30):
        for x in (48, 52):
            net.output_shape((z, 44, x))  # the named sizes are valid
    with pytest.raises(ValueError, match=r"at least 44\); nearest valid sizes: 44"):
        net.output_shape((30, 20, 48))
    with pytest.raises(ValueError, match=r"\(N, 1, D, H, W\)"):
        net(torch.zeros(1, 1, 30, 40))


def test_anisotropic_pool_rule():
    assert anisotropic_pool((1.0, 1.0, 1.0), 3) == ((2, 2, 2),) * 3
    assert anisotropic_pool((2.0, 1.0, 1.0), 3) == ((2, 2, 2),) * 3  # at most twice: pooled
    assert anisotropic_pool((3.0, 1.0, 1.0), 3) == ((1, 2, 2), (2, 2, 2), (2, 2, 2))
    assert anisotropic_pool((10.0, 1.0, 1.0), 4) == ((1, 2, 2),) * 3 + ((2, 2, 2),)
    assert anisotropic_pool((0.25, 1.0, 1.0), 2) == ((2, 1, 1), (2, 2, 2))  # fine z, coarse xy
    assert anisotropic_pool((1.0, 4.0), 3) == ((2, 1), (2, 2), (2, 2))
    for bad in [(0.0, 1.0, 1.0), (1.0, float("nan")), "xy", ()]:
        with pytest.raises(ValueError, match="spacing"):
            anisotropic_pool(bad, 2)


def test_spacing_derives_pool_and_is_stored_as_pool():
    net = UNet(depth=3, base_channels=1, ndim=3, spacing=(5.0, 1.0, 1.0))
    assert net.pool_factors == ((1, 2, 2), (1, 2, 2), (2, 2, 2))
    assert net.config["pool"] == [[1, 2, 2], [1, 2, 2], [2, 2, 2]] and "spacing" not in net.config
    again = UNet(**net.config)
    assert again.pool_factors == net.pool_factors
    assert UNet(depth=2, ndim=3, base_channels=1, pool=2).config["pool"] is None
    with pytest.raises(ValueError, match="pool, spacing"):
        UNet(depth=1, ndim=3, pool=((1, 2, 2),), spacing=(1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        UNet(depth=1, ndim=3, spacing=(2.0, 1.0))
    with pytest.raises(AttributeError, match="margins"):
        _ = net.margin
    assert not hasattr(net, "margin")  # an AttributeError: torch's attribute scans go on
    assert net.margins == (16, 44, 44)  # 2·P + offset: z (1, 1, 2) → 4 + 12, xy → 16 + 28


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"ndim": 4}, "ndim"),
        ({"ndim": True}, "ndim"),
        ({"norm": "instance"}, "norm"),
        ({"scheme": "resnet"}, "scheme"),
        ({"pool": ((1, 2, 2),)}, "pool"),  # one level for depth 2
        ({"pool": ((1, 2), (2, 2))}, "pool"),  # two factors for a 3D network
        ({"pool": ((0, 2, 2), (2, 2, 2))}, "pool"),
        ({"pool": "2"}, "pool"),
    ],
)
def test_bad_3d_arguments_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNet(**{"depth": 2, "base_channels": 1, "ndim": 3, **kwargs})


def test_he_init_std_measured_3d():
    torch.manual_seed(0)
    net = UNet(depth=2, base_channels=32, ndim=3, pool=((1, 2, 2), (2, 2, 2)))
    checked = 0
    for m in net.modules():
        if isinstance(m, torch.nn.Conv3d | torch.nn.ConvTranspose3d) and m.weight.numel() > 20_000:
            incoming = (m.in_channels if isinstance(m, torch.nn.ConvTranspose3d)
                        else m.in_channels * 27)
            expected = math.sqrt(2.0 / incoming)
            assert abs(m.weight.std().item() - expected) / expected < 0.05, m
            assert abs(m.weight.mean().item()) < 0.05 * expected
            assert torch.count_nonzero(m.bias) == 0
            checked += 1
    assert checked >= 6
    ups = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose3d)]
    assert [u.kernel_size for u in ups] == [(2, 2, 2), (1, 2, 2)]  # mirrors the pooling


def test_he_init_is_the_empirical_he_rule_for_a_transposed_conv():
    """Output variance ≈ 2 × input variance of a ReLU'd unit-variance input (He et al.)."""
    torch.manual_seed(1)
    for layer in (torch.nn.ConvTranspose3d(64, 32, 2, stride=2),
                  torch.nn.ConvTranspose3d(64, 32, (1, 2, 2), stride=(1, 2, 2)),
                  torch.nn.Conv3d(64, 32, 3)):
        he_init_(layer)
        x = torch.relu(torch.randn(4, 64, 8, 8, 8))
        with torch.no_grad():
            y = layer(x)
        ratio = (y.pow(2).mean() / x.pow(2).mean()).item()
        assert 1.7 < ratio < 2.3, (layer, ratio)


def test_batch_norm_on_off():
    plain = UNet(depth=1, base_channels=2, ndim=3)
    assert not any(isinstance(m, torch.nn.BatchNorm3d) for m in plain.modules())
    bn = UNet(depth=1, base_channels=2, ndim=3, norm="batch")
    bns = [m for m in bn.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert len(bns) == 6  # one before each ReLU: 3 blocks × 2
    assert list(bn.down[0]) == [bn.down[0][i] for i in range(6)]
    kinds = [type(m).__name__ for m in bn.down[0]]
    assert kinds == ["Conv3d", "BatchNorm3d", "ReLU"] * 2
    # Training mode: BN normalises each channel over the batch (mean 0, var 1 before ReLU).
    seen = {}
    bn.down[0][1].register_forward_hook(lambda m, i, o: seen.update(out=o.detach().clone()))  # ReLU is in place
    x = 5.0 + 3.0 * torch.randn(2, 1, 20, 20, 20)
    bn.train()(x)
    mean = seen["out"].mean(dim=(0, 2, 3, 4))
    var = seen["out"].var(dim=(0, 2, 3, 4), unbiased=False)
    np.testing.assert_allclose(mean.numpy(), 0.0, atol=1e-4)
    np.testing.assert_allclose(var.numpy(), 1.0, atol=1e-2)
    assert bns[0].num_batches_tracked.item() == 1
    # Evaluation mode uses the running statistics: deterministic and batch-independent.
    bn.eval()
    with torch.no_grad():
        one = bn(x[:1])
        both = bn(x)
    torch.testing.assert_close(one, both[:1])
    loss = bn.train()(x).mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in bn.parameters())
    # reset_parameters restores gamma = 1, beta = 0.
    with torch.no_grad():
        for m in bns:
            m.weight.fill_(3.0)
            m.bias.fill_(1.0)
    bn.reset_parameters()
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bns)


def test_batch_norm_option_in_2d_and_2d_keys_unchanged():
    keys = set(UNet(depth=1, base_channels=2).state_dict())
    expected = {f"{block}.{i}.{p}" for block in ("down.0", "bottom", "up.0") for i in (0, 2)
                for p in ("weight", "bias")}
    assert keys == expected | {"upconvs.0.weight", "upconvs.0.bias", "head.weight", "head.bias"}
    net = UNet(depth=1, base_channels=2, norm="batch")
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules()) == 6
    assert net.eval()(torch.zeros(1, 1, 20, 20)).shape == (1, 2, 4, 4)
    assert UNet().config == {
        "in_channels": 1, "num_classes": 2, "depth": 4, "base_channels": 64, "padding": "valid",
        "dropout": 0.5, "ndim": 2, "pool": None, "norm": None, "scheme": "unet",
    }


def test_3d_model_file_round_trip(tmp_path):
    from napari_unet.core.io import load_model, save_model

    net = UNet(2, 3, depth=2, base_channels=2, ndim=3, norm="batch", scheme="3d-unet",
               spacing=(3.0, 1.0, 1.0)).eval()
    x = torch.randn(1, 2, *net.valid_input_shape((8, 20, 20)))
    net.train()(x)  # move the BN running statistics away from their defaults
    net.eval()
    path = save_model(net, tmp_path / "m3d.safetensors")
    loaded, meta = load_model(path)
    assert meta["architecture"] == net.config and loaded.pool_factors == net.pool_factors
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


def test_anisotropic_3d_model_traces_and_exports(tmp_path):
    from napari_unet.core.io.tensors import export_onnx, export_torchscript

    net = UNet(depth=1, base_channels=2, ndim=3, norm="batch", pool=((1, 2, 2),)).eval()
    x = np.random.default_rng(0).random((1, 1, *net.valid_input_shape((16, 20, 20))), np.float32)
    with torch.no_grad():
        expected = torch.softmax(net(torch.from_numpy(x)), 1).numpy()
    traced = torch.jit.load(str(export_torchscript(net, tmp_path / "m.pt", example=x)))
    np.testing.assert_allclose(traced(torch.from_numpy(x)).detach().numpy(), expected, atol=1e-5)
    ort = pytest.importorskip("onnxruntime")
    path = export_onnx(net, tmp_path / "m.onnx", example=x)
    session = ort.InferenceSession(str(path))
    out = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(out, expected, atol=1e-4)


@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("ndim", [2, 3])
def test_3d_unet_channel_plan_at_every_depth(depth, ndim):
    net = UNet(2, 3, depth=depth, base_channels=2, ndim=ndim, scheme="3d-unet", dropout=0).eval()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    widths = [m.out_channels for m in net.down.modules() if isinstance(m, torch.nn.Conv2d
                                                                       | torch.nn.Conv3d)]
    assert widths == [w for i in range(depth) for w in (2 * 2**i, 2 * 2 ** (i + 1))]
    assert net.head.in_channels == 4 and all(u.in_channels == u.out_channels for u in net.upconvs)
    assert len(convs) == 4 * depth + 2 + depth + 1  # 2 per block, up-convs, head
    shape = net.valid_input_shape(1)
    with torch.no_grad():
        assert net(torch.zeros(1, 2, *shape)).shape == (1, 3, *net.output_shape(shape))


@pytest.mark.parametrize("norm", [None, "batch"])
def test_inflated_2d_network_computes_plane_by_plane(norm):
    torch.manual_seed(0)
    net2d = UNet(depth=2, base_channels=3, dropout=0.0, norm=norm)
    if norm:  # non-trivial running statistics, copied as they are
        with torch.no_grad():
            for m in net2d.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
    net2d.eval()
    exact = inflate_to_3d(net2d, pool=((1, 2, 2), (1, 2, 2))).eval()
    x = torch.rand(1, 1, 23, 44, 44)
    with torch.no_grad():
        out = exact(x)
        m = exact.margins[0]
        for k in (0, out.shape[2] - 1):  # output plane k is the 2D output of plane k + margin
            torch.testing.assert_close(out[:, :, k], net2d(x[:, :, k + m]), atol=1e-5, rtol=1e-4)
        # z pooling 2 mixes neighbouring planes: on a volume constant along z it is exact too
        pooled = inflate_to_3d(net2d, pool=((1, 2, 2), (2, 2, 2))).eval()
        flat = x[:, :, :1].expand(1, 1, 26, 44, 44)
        out = pooled(flat)
        torch.testing.assert_close(out[:, :, 0], net2d(flat[:, :, 0]), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="model2d: expected a 2D UNet"):
        inflate_to_3d(exact)
    with pytest.raises(ValueError, match="xy factors 2"):
        inflate_to_3d(net2d, pool=((2, 1, 1), (2, 2, 2)))
