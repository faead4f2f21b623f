"""The U-Net of Ronneberger, Fischer & Brox (2015), its 3D form (Çiçek et al. 2016), and shapes.

The network is the paper's: blocks of two 3×3 convolutions + ReLU, 2×2 max pooling with
stride 2 and channels doubled per level on the contracting path; 2×2 up-convolutions that halve
the channels, concatenation with the centre-cropped skip map and two 3×3 convolutions + ReLU on
the expanding path; a final 1×1 convolution to the classes. With ``padding="valid"`` (the paper)
every 3×3 convolution loses one pixel per side, so the output is smaller than the input
(572×572 → 388×388 for ``depth=4``); ``padding="same"`` keeps the size.

``ndim=3`` is the 3D U-Net: the same network with 3×3×3 convolutions, 2×2×2 pooling and
up-convolutions, optionally anisotropic pooling (``pool`` or ``spacing``, see
:func:`anisotropic_pool`), batch normalisation before every ReLU (``norm="batch"``) and the 3D
paper's channel plan (``scheme="3d-unet"``: 32/64, 64/128, ... and up-convolutions that keep the
channels).

The shapes (valid sizes, pooling factors) are :mod:`napari_unet.core.model.shapes`; together the
two files are the architecture's source in bioimage.io packages.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from napari_unet.core.model.shapes import (
    anisotropic_pool,
    check_depth,
    check_padding,
    is_count,
    pool_levels,
    valid_input_shape,
    valid_output_shape,
)

__all__ = ["UNet", "he_init_"]

_NORMS = (None, "batch")
_SCHEMES = ("unet", "3d-unet")
_LAYERS = {
    2: (nn.Conv2d, nn.ConvTranspose2d, nn.MaxPool2d, nn.BatchNorm2d, nn.Dropout2d),
    3: (nn.Conv3d, nn.ConvTranspose3d, nn.MaxPool3d, nn.BatchNorm3d, nn.Dropout3d),
}


def he_init_(module: nn.Module) -> None:
    """He initialisation of one layer in place: N(0, sqrt(2 / N)), N = incoming nodes; bias 0.

    For a convolution ``N = k_1·…·k_n·C_in``. For a transposed convolution each output node sees
    ``C_in · Π k_i / s_i`` inputs — ``C_in`` for the U-Net's up-convolutions (kernel = stride).
    Normalisation layers get weight 1 and bias 0. Other modules are left as they are.

    Examples
    --------
    >>> conv = nn.ConvTranspose2d(512, 256, 2, stride=2)
    >>> he_init_(conv)
    >>> round(conv.weight.std().item(), 2)  # sqrt(2 / 512)
    0.06
    """
    if isinstance(module, nn.modules.conv._ConvNd):
        fan_in = module.in_channels // module.groups * math.prod(module.kernel_size)
        if module.transposed:
            fan_in = module.in_channels * math.prod(module.kernel_size) / math.prod(module.stride)
        nn.init.normal_(module.weight, mean=0.0, std=math.sqrt(2.0 / fan_in))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm):
        module.reset_parameters()


class _DoubleConv(nn.Sequential):
    """conv → [BN] → ReLU, twice (indices 0..3 without BN: the 2D model's state-dict keys)."""

    def __init__(self, c_in: int, c_mid: int, c_out: int, pad: int, ndim: int, norm) -> None:
        conv, _, _, batchnorm, _ = _LAYERS[ndim]
        layers: list[nn.Module] = []
        for a, b in ((c_in, c_mid), (c_mid, c_out)):
            layers.append(conv(a, b, 3, padding=pad))
            if norm == "batch":
                layers.append(batchnorm(b))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def _center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    starts = [(n - s) // 2 for n, s in zip(x.shape[-len(size):], size, strict=True)]
    return x[(..., *(slice(a, a + s) for a, s in zip(starts, size, strict=True)))]


def _channel_plan(scheme: str, in_channels: int, base: int, depth: int):
    """(down blocks, bottom block, up-convolutions, up blocks) as channel tuples."""
    if scheme == "unet":  # Ronneberger 2015: c, c per level; up-convolutions halve
        c = [base * 2**i for i in range(depth + 1)]
        down = [((in_channels, *c[:-1])[i], c[i], c[i]) for i in range(depth)]
        bottom = ((in_channels, *c)[depth], c[depth], c[depth])
        ups = [(2 * c[i], c[i]) for i in reversed(range(depth))]
        blocks = [(2 * c[i], c[i], c[i]) for i in reversed(range(depth))]
        return down, bottom, ups, blocks, c[0]
    # Çiçek 2016: c, 2c per level; up-convolutions keep the channels
    c = [base * 2**i for i in range(depth + 2)]
    down = [((in_channels, *c[1:])[i], c[i], c[i + 1]) for i in range(depth)]
    bottom = ((in_channels, *c[1:])[depth], c[depth], c[depth + 1])
    ups = [(c[i + 2], c[i + 2]) for i in reversed(range(depth))]
    blocks = [(c[i + 2] + c[i + 1], c[i + 1], c[i + 1]) for i in reversed(range(depth))]
    return down, bottom, ups, blocks, c[1]


def _checked_factors(in_channels, num_classes, depth, base_channels, padding, dropout, *, ndim,
                     pool, spacing, norm, scheme) -> list[tuple[int, ...]]:
    """The pooling factors per level and axis of a :class:`UNet`'s arguments, each checked
    (ValueError naming the argument)."""
    for name, value in (
        ("in_channels", in_channels),
        ("num_classes", num_classes),
        ("base_channels", base_channels),
    ):
        if not is_count(value):
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    check_depth(depth)
    check_padding(padding)
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
    if ndim not in _LAYERS or isinstance(ndim, bool):
        raise ValueError(f"ndim: expected 2 (images) or 3 (volumes), got {ndim!r}")
    if norm not in _NORMS:
        raise ValueError(f"norm: expected None or 'batch', got {norm!r}")
    if scheme not in _SCHEMES:
        raise ValueError(f"scheme: expected one of {_SCHEMES}, got {scheme!r}")
    if spacing is not None:
        if pool is not None:
            raise ValueError("pool, spacing: give one of them (spacing derives pool), not both")
        if len(tuple(spacing)) != ndim:
            raise ValueError(
                f"spacing: expected {ndim} voxel sizes for ndim={ndim}, got {spacing!r}"
            )
        pool = anisotropic_pool(spacing, depth)
    levels = pool_levels(pool, depth)
    if any(len(f) not in (1, ndim) for f in levels):
        raise ValueError(f"pool: expected 1 or {ndim} factors per level, got {pool!r}")
    factors = [f * ndim if len(f) == 1 else f for f in levels]  # depth × ndim
    return factors


class UNet(nn.Module):
    """The U-Net of Ronneberger et al. (2015) for 2D images, or the 3D U-Net (Çiçek et al. 2016).

    Parameters
    ----------
    in_channels : int
        Channels of the input image.
    num_classes : int
        Output classes (2 for background/cell, 3 for background/interior/border).
    depth : int
        Number of poolings (the paper: 4, i.e. 23 convolutional layers; the 3D paper: 3).
    base_channels : int
        Channels of the first block, doubled per level (the paper: 64 → 1024; the 3D paper: 32).
    padding : {"valid", "same"}
        ``"valid"`` is the paper's unpadded network (output smaller than input);
        ``"same"`` pads every 3×3 convolution so output size = input size.
    dropout : float
        Drop-out probability at the end of the contracting path (0 disables).
    ndim : {2, 3}
        Spatial dimensions: 2 for (H, W) images, 3 for (D, H, W) volumes.
    pool : None, int or sequence, optional
        Pooling factors per level: an int per level (all axes) or one tuple of ``ndim`` factors
        per level, e.g. ``((1, 2, 2), (2, 2, 2), (2, 2, 2))`` for stacks with a coarse z step.
        The up-convolutions mirror them. Default: 2 along every axis.
    spacing : sequence of float, optional
        Voxel size per axis, e.g. ``(5.0, 1.0, 1.0)``; derives ``pool`` by
        :func:`anisotropic_pool` (give ``pool`` or ``spacing``, not both).
    norm : {None, "batch"}
        ``"batch"``: batch normalisation before every ReLU, as in the 3D U-Net paper.
    scheme : {"unet", "3d-unet"}
        Channel plan. ``"unet"`` (2015): two convolutions of ``c`` channels per level and
        up-convolutions halving the channels. ``"3d-unet"`` (2016): ``c`` then ``2c`` channels
        per level (32/64, 64/128, …) and up-convolutions keeping them.

    Notes
    -----
    Input ``(N, in_channels, *spatial)`` → logits ``(N, num_classes, *output_shape(spatial))``.
    Weights are drawn by :func:`he_init_` (He et al., as in the paper); biases are 0. The
    3D U-Net paper's network is ``UNet(3, 3, depth=3, base_channels=32, dropout=0, ndim=3,
    norm="batch", scheme="3d-unet")`` (input 132×132×116 → output 44×44×28).

    Examples
    --------
    >>> import torch
    >>> net = UNet(depth=1, base_channels=4)
    >>> net.output_shape((20, 20))
    (4, 4)
    >>> tuple(net(torch.zeros(1, 1, 20, 20)).shape)
    (1, 2, 4, 4)
    >>> net3d = UNet(depth=1, base_channels=2, ndim=3, pool=((1, 2, 2),))
    >>> net3d.output_shape((16, 20, 20)), net3d.margins
    ((4, 4, 4), (6, 8, 8))
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        depth: int = 4,
        base_channels: int = 64,
        padding: str = "valid",
        dropout: float = 0.5,
        *,
        ndim: int = 2,
        pool=None,
        spacing: Sequence[float] | None = None,
        norm: str | None = None,
        scheme: str = "unet",
    ) -> None:
        super().__init__()
        factors = _checked_factors(in_channels, num_classes, depth, base_channels, padding,
                                   dropout, ndim=ndim, pool=pool, spacing=spacing, norm=norm,
                                   scheme=scheme)
        stored = None if all(f == (2,) * ndim for f in factors) else [list(f) for f in factors]
        self.config = {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "depth": depth,
            "base_channels": base_channels,
            "padding": padding,
            "dropout": float(dropout),
            "ndim": ndim,
            "pool": stored,
            "norm": norm,
            "scheme": scheme,
        }
        self.in_channels, self.num_classes, self.depth = in_channels, num_classes, depth
        self.base_channels, self.padding, self.ndim = base_channels, padding, ndim
        self.pool_factors: tuple[tuple[int, ...], ...] = tuple(factors)
        conv, upconv, maxpool, _, drop = _LAYERS[ndim]
        pad = 1 if padding == "same" else 0
        down, bottom, ups, blocks, c_head = _channel_plan(scheme, in_channels, base_channels, depth)
        self.down = nn.ModuleList(_DoubleConv(*c, pad, ndim, norm) for c in down)
        self.pools = nn.ModuleList(maxpool(f, f) for f in factors)
        self.bottom = _DoubleConv(*bottom, pad, ndim, norm)
        self.dropout = drop(dropout) if dropout > 0 else nn.Identity()
        self.upconvs = nn.ModuleList(
            upconv(a, b, f, stride=f) for (a, b), f in zip(ups, reversed(factors), strict=True)
        )
        self.up = nn.ModuleList(_DoubleConv(*c, pad, ndim, norm) for c in blocks)
        self.head = conv(c_head, num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw every layer's weights by :func:`he_init_` (the paper's init)."""
        for m in self.modules():
            he_init_(m)

    def _pool_arg(self, n_axes: int):
        """The pool factors of the last ``n_axes`` axes, in the form of ``valid_input_shape``."""
        if n_axes > self.ndim:
            raise ValueError(f"input_shape: expected at most {self.ndim} spatial sizes")
        return tuple(f[self.ndim - n_axes :] for f in self.pool_factors)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial output shape for a spatial ``input_shape``; ValueError if it is not valid.

        Longer shapes (with batch and channel axes) use their last ``ndim`` sizes; shorter ones
        are the last axes.

        Examples
        --------
        >>> UNet().output_shape((572, 572))
        (388, 388)
        """
        shape = tuple(input_shape)[-self.ndim :]
        return valid_output_shape(shape, self.depth, padding=self.padding,
                                  pool=self._pool_arg(len(shape)))

    def valid_input_shape(self, min_shape: int | Sequence[int]) -> tuple[int, ...]:
        """Smallest valid input of this network at least ``min_shape`` (an int: every axis).

        Examples
        --------
        >>> UNet(ndim=3, depth=2, pool=((1, 2, 2), (2, 2, 2))).valid_input_shape(30)
        (30, 44, 44)
        """
        shape = (min_shape,) * self.ndim if isinstance(min_shape, int) else tuple(min_shape)
        return valid_input_shape(shape, self.depth, padding=self.padding,
                                 pool=self._pool_arg(len(shape)))

    @property
    def margins(self) -> tuple[int, ...]:
        """Pixels lost per side along each axis by the valid convolutions: (in - out) / 2."""
        if self.padding == "same":
            return (0,) * self.ndim
        side = self.valid_input_shape(1)
        return tuple((s - o) // 2 for s, o in zip(side, self.output_shape(side), strict=True))

    @property
    def margin(self) -> int:
        """Pixels lost per side (0 for ``same``), the same along every axis; see ``margins``.

        AttributeError (naming ``margins``) for anisotropic pooling, where it differs per axis.
        """
        margins = set(self.margins)
        if len(margins) > 1:
            raise AttributeError(
                f"margin: this network pools anisotropically, so the margin differs per axis "
                f"{self.margins}; use model.margins"
            )
        return margins.pop()

    def __getattr__(self, name: str):
        if name == "margin":  # re-raise margin's own message (nn.Module's would replace it)
            return UNet.margin.fget(self)
        return super().__getattr__(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != self.ndim + 2 or x.shape[1] != self.in_channels:
            axes = "H, W" if self.ndim == 2 else "D, H, W"
            raise ValueError(
                f"input: expected a tensor (N, {self.in_channels}, {axes}), got shape "
                f"{tuple(x.shape)}"
            )
        self.output_shape(x.shape[2:])  # raises a helpful error for invalid sizes
        skips = []
        for block, pool in zip(self.down, self.pools, strict=True):
            x = block(x)
            skips.append(x)
            x = pool(x)
        x = self.dropout(self.bottom(x))
        for upconv, block, skip in zip(self.upconvs, self.up, reversed(skips), strict=True):
            x = upconv(x)
            x = block(torch.cat([_center_crop(skip, x.shape[2:]), x], dim=1))
        return self.head(x)
