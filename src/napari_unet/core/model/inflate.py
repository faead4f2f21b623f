"""A 3D U-Net started from a trained 2D one: its weights inflated along z."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from napari_unet.core.model.unet import UNet

__all__ = ["inflate_to_3d"]


def inflate_to_3d(model2d: UNet, *, pool=None, spacing: Sequence[float] | None = None) -> UNet:
    """A 3D U-Net that computes, plane by plane, what the 2D ``model2d`` computes.

    The 2D network's weights are "inflated" (Carreira & Zisserman 2017): every 3×3 kernel
    becomes a 3×3×3 one with the 2D kernel as its middle plane and zeros above and below; every
    2×2 up-convolution is repeated along z for the level's z factor; biases and batch-norm
    statistics are copied. With 1 as the z pooling factor at every level the 3D network's
    output plane ``k`` equals the 2D network's output for input plane ``k + margins[0]``
    exactly; with z pooling 2 the max pooling also takes the neighbouring plane, so the result
    is close. Training then learns the z context from there: a 3D U-Net trained on a few
    annotated slices starts from the 2D network those slices train in seconds
    (:class:`napari_unet.core.training.Trainer`, ``pretrain_2d``).

    Examples
    --------
    >>> import torch
    >>> net2d = UNet(depth=1, base_channels=2, dropout=0.0).eval()
    >>> net3d = inflate_to_3d(net2d, pool=((1, 2, 2),)).eval()
    >>> x = torch.rand(1, 1, 16, 20, 20)
    >>> out = net3d(x)
    >>> bool(torch.allclose(out[:, :, 0], net2d(x[:, :, net3d.margins[0]]), atol=1e-5))
    True
    """
    if not isinstance(model2d, UNet) or model2d.ndim != 2:
        raise ValueError(f"model2d: expected a 2D UNet, got {type(model2d).__name__}"
                         f"{'' if not isinstance(model2d, UNet) else f' with ndim={model2d.ndim}'}")
    if model2d.config.get("pool") is not None:
        raise ValueError("model2d: expected the 2D U-Net's 2×2 pooling at every level, got "
                         f"pool={model2d.config['pool']}")
    cfg = {k: v for k, v in model2d.config.items() if k not in ("ndim", "pool")}
    net = UNet(**cfg, ndim=3, pool=pool, spacing=spacing)
    if any(tuple(f[1:]) != (2, 2) for f in net.pool_factors):
        raise ValueError(f"pool: expected xy factors 2 at every level (the 2D network's), got "
                         f"{[list(f) for f in net.pool_factors]}")
    src = model2d.state_dict()
    out = {}
    for name, w3 in net.state_dict().items():
        w2 = src[name]
        if w3.ndim == w2.ndim:  # biases, batch-norm parameters and statistics
            out[name] = w2.clone()
        elif name.startswith("upconvs."):  # (C_in, C_out, fz, 2, 2): the same kernel per z
            out[name] = w2.unsqueeze(2).expand_as(w3).clone()
        else:  # (C_out, C_in, k, k, k): the 2D kernel in the middle plane
            w = torch.zeros_like(w3)
            w[:, :, w3.shape[2] // 2] = w2
            out[name] = w
    net.load_state_dict(out)
    return net
