"""The U-Net of Ronneberger, Fischer & Brox (2015) and its shape arithmetic.

The network is the paper's: blocks of two 3×3 convolutions + ReLU, 2×2 max pooling with
stride 2 and channels doubled per level on the contracting path; 2×2 up-convolutions that halve
the channels, concatenation with the centre-cropped skip map and two 3×3 convolutions + ReLU on
the expanding path; a final 1×1 convolution to the classes. With ``padding="valid"`` (the paper)
every 3×3 convolution loses one pixel per side, so the output is smaller than the input
(572×572 → 388×388 for ``depth=4``); ``padding="same"`` keeps the size.

Shape arithmetic (valid padding, ``depth = d``): an input of side ``s`` is valid when
``s = 2**d * m + 4 * (2**d - 1)`` for an integer ``m`` (the side entering the bottom block) with an
output side ``2**d * (m - 4) - 4 * (2**d - 1) >= 1``. For ``d = 4`` that is ``s = 16 m + 60``,
``m >= 8``: 188, 204, …, 572, ….
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["UNet", "nearest_valid_sizes", "valid_input_shape", "valid_output_shape"]

_PADDINGS = ("valid", "same")


def _check_depth(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(
            f"depth: expected a non-negative integer (the paper uses 4), got {depth!r}"
        )
    return depth


def _side_out(side: int, depth: int, padding: str) -> int:
    """Output side for one input side, or a value < 1 / -1 when the side is invalid."""
    if padding == "same":
        return side if side >= 1 and side % (2**depth) == 0 else -1
    s = side
    for _ in range(depth):
        s -= 4
        if s < 2 or s % 2:
            return -1
        s //= 2
    s -= 4
    for _ in range(depth):
        if s < 1:
            return -1
        s = 2 * s - 4
    return s


def _valid_sides_around(side: int, depth: int, padding: str) -> tuple[int, int | None]:
    """Nearest valid input sides at or above ``side`` and strictly below it (None if none)."""
    step = 2**depth
    if padding == "same":
        up = max(step, math.ceil(side / step) * step)
        down = up - step if up - step >= step else None
        if up == side:
            down = side - step if side - step >= step else None
        return up, down
    offset = 4 * (step - 1)
    m_min = 4 + math.ceil((1 + 4 * (step - 1)) / step)  # smallest m with output >= 1
    m_up = max(m_min, math.ceil((side - offset) / step))
    up = step * m_up + offset
    m_down = m_up - 1 if up >= side else m_up
    down = step * m_down + offset if m_down >= m_min else None
    if down is not None and down >= side:
        down = None
    return up, down


def nearest_valid_sizes(side: int, *, depth: int = 4, padding: str = "valid") -> list[int]:
    """Valid input sides closest to ``side`` (the one below, if any, and the one at or above).

    Examples
    --------
    >>> nearest_valid_sizes(570)
    [556, 572]
    """
    up, down = _valid_sides_around(int(side), _check_depth(depth), padding)
    return [s for s in (down, up) if s is not None]


def valid_input_shape(
    min_shape: int | Sequence[int], depth: int = 4, *, padding: str = "valid"
) -> tuple[int, ...]:
    """Smallest valid network input that is at least ``min_shape`` along every axis.

    Parameters
    ----------
    min_shape : int or sequence of int
        Minimum spatial input size, e.g. ``(512, 512)``; an int means a square.
    depth : int
        Number of poolings of the network.
    padding : {"valid", "same"}
        Convolution padding of the network.

    Returns
    -------
    tuple of int

    Examples
    --------
    >>> valid_input_shape((570, 572))
    (572, 572)
    >>> valid_input_shape(100, depth=2)
    (100,)
    """
    depth = _check_depth(depth)
    if padding not in _PADDINGS:
        raise ValueError(f"padding: expected one of {_PADDINGS}, got {padding!r}")
    shape = (min_shape,) if isinstance(min_shape, int) else tuple(min_shape)
    if not shape or any(int(s) < 1 for s in shape):
        raise ValueError(f"min_shape: expected positive sizes, got {min_shape!r}")
    return tuple(_valid_sides_around(int(s), depth, padding)[0] for s in shape)


def valid_output_shape(
    input_shape: Sequence[int], depth: int = 4, *, padding: str = "valid"
) -> tuple[int, ...]:
    """Output size of a U-Net for a spatial ``input_shape``; ValueError names valid sizes.

    Examples
    --------
    >>> valid_output_shape((572, 572))
    (388, 388)
    """
    depth = _check_depth(depth)
    if padding not in _PADDINGS:
        raise ValueError(f"padding: expected one of {_PADDINGS}, got {padding!r}")
    out = []
    for axis, side in enumerate(input_shape):
        o = _side_out(int(side), depth, padding)
        if o < 1:
            near = nearest_valid_sizes(int(side), depth=depth, padding=padding)
            rule = (
                f"a multiple of {2**depth}"
                if padding == "same"
                else f"of the form {2**depth}·m + {4 * (2**depth - 1)}"
            )
            raise ValueError(
                f"input size {side} along spatial axis {axis} is not valid for a U-Net of depth "
                f"{depth} with {padding!r} padding (expected {rule}); nearest valid sizes: "
                f"{' or '.join(map(str, near))}. Pad or crop the input, or use "
                f"valid_input_shape({tuple(int(s) for s in input_shape)}, depth={depth})."
            )
        out.append(o)
    return tuple(out)


class _DoubleConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, pad: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=pad),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=pad),
            nn.ReLU(inplace=True),
        )


def incoming_nodes(conv: nn.Conv2d | nn.ConvTranspose2d) -> int:
    """Inputs of one output neuron of a (transposed) convolution: the ``N`` of He's init.

    Examples
    --------
    >>> incoming_nodes(nn.Conv2d(8, 4, 3)), incoming_nodes(nn.ConvTranspose2d(8, 4, 2, stride=2))
    (72, 8)
    """
    taps = 1
    for k, s in zip(conv.kernel_size, conv.stride, strict=True):
        taps *= -(-k // s) if isinstance(conv, nn.ConvTranspose2d) else k
    return int(conv.in_channels // conv.groups * taps)


def _center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return x[..., top : top + size[0], left : left + size[1]]


class UNet(nn.Module):
    """The U-Net of Ronneberger et al. (2015) for 2D images.

    Parameters
    ----------
    in_channels : int
        Channels of the input image.
    num_classes : int
        Output classes (2 for background/cell, 3 for background/interior/border).
    depth : int
        Number of 2×2 poolings (the paper: 4, i.e. 23 convolutional layers).
    base_channels : int
        Channels of the first block, doubled per level (the paper: 64 → 1024).
    padding : {"valid", "same"}
        ``"valid"`` is the paper's unpadded network (output smaller than input);
        ``"same"`` pads every 3×3 convolution so output size = input size.
    dropout : float
        Drop-out probability at the end of the contracting path (0 disables).

    Notes
    -----
    Input ``(N, in_channels, H, W)`` → logits ``(N, num_classes, *output_shape((H, W)))``.
    Weights are drawn from N(0, sqrt(2 / N_in)), N_in = k·k·C_in (He et al., as in the paper);
    biases are 0.

    Examples
    --------
    >>> import torch
    >>> net = UNet(depth=1, base_channels=4)
    >>> net.output_shape((20, 20))
    (4, 4)
    >>> tuple(net(torch.zeros(1, 1, 20, 20)).shape)
    (1, 2, 4, 4)
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        depth: int = 4,
        base_channels: int = 64,
        padding: str = "valid",
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        for name, value in (
            ("in_channels", in_channels),
            ("num_classes", num_classes),
            ("base_channels", base_channels),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        _check_depth(depth)
        if padding not in _PADDINGS:
            raise ValueError(f"padding: expected one of {_PADDINGS}, got {padding!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout!r}")
        self.config = {
            "in_channels": in_channels,
            "num_classes": num_classes,
            "depth": depth,
            "base_channels": base_channels,
            "padding": padding,
            "dropout": float(dropout),
        }
        self.in_channels, self.num_classes, self.depth = in_channels, num_classes, depth
        self.base_channels, self.padding = base_channels, padding
        pad = 1 if padding == "same" else 0
        chans = [base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList()
        c_prev = in_channels
        for c in chans[:-1]:
            self.down.append(_DoubleConv(c_prev, c, pad))
            c_prev = c
        self.pool = nn.MaxPool2d(2, 2)
        self.bottom = _DoubleConv(c_prev, chans[-1], pad)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.upconvs = nn.ModuleList()
        self.up = nn.ModuleList()
        for c in reversed(chans[:-1]):
            self.upconvs.append(nn.ConvTranspose2d(2 * c, c, 2, stride=2))
            self.up.append(_DoubleConv(2 * c, c, pad))
        self.head = nn.Conv2d(chans[0], num_classes, 1)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw weights from N(0, sqrt(2 / N)) and set biases to 0 (the paper's init).

        ``N`` is the number of incoming nodes of one output neuron: ``k·k·C_in`` for a
        convolution; for a transposed convolution each output pixel sees only
        ``ceil(k / stride)`` taps per axis, so the 2×2 stride-2 up-convolution has ``N = C_in``.
        """
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / incoming_nodes(m)))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """Spatial output shape for a spatial ``input_shape``; ValueError if it is not valid.

        Examples
        --------
        >>> UNet().output_shape((572, 572))
        (388, 388)
        """
        return valid_output_shape(tuple(input_shape)[-2:], self.depth, padding=self.padding)

    def valid_input_shape(self, min_shape: int | Sequence[int]) -> tuple[int, ...]:
        """Smallest valid input of this network that is at least ``min_shape``."""
        return valid_input_shape(min_shape, self.depth, padding=self.padding)

    @property
    def margin(self) -> int:
        """Pixels lost per side by the valid convolutions (0 for ``same``): (in - out) / 2."""
        if self.padding == "same":
            return 0
        side = valid_input_shape(1, self.depth)[0]
        return (side - self.output_shape((side, side))[0]) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"input: expected a tensor (N, {self.in_channels}, H, W), got shape "
                f"{tuple(x.shape)}"
            )
        self.output_shape(x.shape[-2:])  # raises a helpful error for invalid sizes
        skips = []
        for block in self.down:
            x = block(x)
            skips.append(x)
            x = self.pool(x)
        x = self.dropout(self.bottom(x))
        for upconv, block, skip in zip(self.upconvs, self.up, reversed(skips), strict=True):
            x = upconv(x)
            x = block(torch.cat([_center_crop(skip, x.shape[-2:]), x], dim=1))
        return self.head(x)
