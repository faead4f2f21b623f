"""The shapes of a U-Net: valid input and output sizes, and pooling factors per level.

Shape arithmetic (valid padding), per axis: with pooling factors ``f_0 .. f_{d-1}`` along the
axis, ``P = f_0·…·f_{d-1}`` and ``offset = 4·(1 + f_0 + f_0 f_1 + … + f_0…f_{d-2})``, an input
side ``s`` is valid when ``s = P·m + offset`` for an integer ``m`` (the side entering the bottom
block) with an output side ``P·(m - 4) - offset >= 1``. For ``f = 2`` and ``d = 4`` that is
``s = 16 m + 60``, ``m >= 8``: 188, 204, …, 572, …; the output is ``16 m - 124``.

Self-contained (the standard library only): bioimage.io packages ship it with
:mod:`napari_unet.core.model.unet` as the architecture's source.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "anisotropic_pool",
    "check_depth",
    "check_padding",
    "is_count",
    "nearest_valid_sizes",
    "pool_levels",
    "valid_input_shape",
    "valid_output_shape",
]

_PADDINGS = ("valid", "same")


def check_depth(depth: int) -> int:
    """``depth`` if it is a number of poolings (an integer >= 0); ValueError otherwise."""
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 0:
        raise ValueError(
            f"depth: expected a non-negative integer (the paper uses 4), got {depth!r}"
        )
    return depth


def check_padding(padding: str) -> str:
    """``padding`` if it is "valid" or "same"; ValueError otherwise."""
    if padding not in _PADDINGS:
        raise ValueError(f"padding: expected one of {_PADDINGS}, got {padding!r}")
    return padding


def is_count(value) -> bool:
    """Whether ``value`` is an integer >= 1 (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, int) and value >= 1


def pool_levels(pool, depth: int) -> tuple[tuple[int, ...], ...]:
    """``pool`` → one tuple of factors per level (one factor per axis, or one for all axes)."""
    pool = 2 if pool is None else pool
    try:
        levels = [(f,) if is_count(f) else tuple(f)
                  for f in ([pool] * depth if is_count(pool) else pool)]
        ok = len(levels) == depth and all(f and all(map(is_count, f)) for f in levels)
    except TypeError:
        ok = False
    if not ok or len({len(f) for f in levels if len(f) > 1}) > 1:
        raise ValueError(
            f"pool: expected None, a positive integer or one factor (or one tuple of factors per "
            f"axis) per level for depth {depth}, got {pool!r}; e.g. pool=((1, 2, 2), (2, 2, 2))"
        )
    return tuple(levels)


def _per_axis(pool, depth: int, n_axes: int) -> list[tuple[int, ...]]:
    """Pooling factors along each of the last ``n_axes`` axes (aligned right, like numpy)."""
    levels = pool_levels(pool, depth)
    width = max((len(f) for f in levels), default=1)
    if width > 1 and n_axes > width:
        raise ValueError(f"input_shape: {n_axes} sizes, but pool has factors for {width} axes")
    if width == 1:
        return [tuple(f[0] for f in levels)] * n_axes
    return [tuple(f[width - n_axes + a] for f in levels) for a in range(n_axes)]


def anisotropic_pool(spacing: Sequence[float], depth: int = 4) -> tuple[tuple[int, ...], ...]:
    """Pooling factors per level for voxels of size ``spacing``: coarse axes are pooled later.

    The rule (that of nnU-Net): at each level an axis is pooled by 2 when its current voxel size
    (``spacing`` times the pooling so far) is at most twice the finest current voxel size;
    otherwise it keeps its resolution (factor 1) until the finer axes have caught up. Isotropic
    spacing, or a z step at most twice the xy pixel, gives 2×2×2 pooling everywhere.

    Examples
    --------
    >>> anisotropic_pool((5.0, 1.0, 1.0), depth=4)  # z step 5 × the xy pixel
    ((1, 2, 2), (1, 2, 2), (2, 2, 2), (2, 2, 2))
    >>> anisotropic_pool((1.0, 1.0), depth=2)
    ((2, 2), (2, 2))
    """
    check_depth(depth)
    try:
        size = [float(s) for s in spacing]
    except (TypeError, ValueError):
        size = []
    if not size or not all(math.isfinite(s) and s > 0 for s in size):
        raise ValueError(
            f"spacing: expected one positive voxel size per spatial axis, got {spacing!r}; e.g. "
            "spacing=(5.0, 1.0, 1.0) for a z step five times the xy pixel"
        )
    levels = []
    for _ in range(depth):
        finest = min(size)
        factors = tuple(2 if s <= 2.0 * finest * (1 + 1e-9) else 1 for s in size)
        size = [s * f for s, f in zip(size, factors, strict=True)]
        levels.append(factors)
    return tuple(levels)


def _step_offset(factors: Sequence[int]) -> tuple[int, int]:
    """``P = Π f`` and ``offset = 4·(1 + f_0 + f_0 f_1 + …)``: valid sides are ``P·m + offset``."""
    return math.prod(factors), 4 * sum(math.prod(factors[:i]) for i in range(len(factors)))


def _side_out(side: int, factors: Sequence[int], padding: str) -> int:
    """Output side for one input side, or -1 when the side is invalid."""
    if padding == "same":
        return side if side >= 1 and side % math.prod(factors) == 0 else -1
    s = side
    for f in factors:
        s -= 4
        if s < f or s % f:
            return -1
        s //= f
    s -= 4
    for f in reversed(factors):
        if s < 1:
            return -1
        s = f * s - 4
    return s


def _valid_sides_around(side: int, factors: Sequence[int], padding: str) -> tuple[int, int | None]:
    """Nearest valid input sides at or above ``side`` and strictly below it (None if none)."""
    step, offset = _step_offset(factors)
    if padding == "same":
        up = max(step, math.ceil(side / step) * step)
        down = up - step if up - step >= step else None
        if up == side:
            down = side - step if side - step >= step else None
        return up, down
    m_min = 4 + math.ceil((1 + offset) / step)  # smallest m with output >= 1
    m_up = max(m_min, math.ceil((side - offset) / step))
    up = step * m_up + offset
    m_down = m_up - 1 if up >= side else m_up
    down = step * m_down + offset if m_down >= m_min else None
    if down is not None and down >= side:
        down = None
    return up, down


def nearest_valid_sizes(
    side: int, *, depth: int = 4, padding: str = "valid", pool=None
) -> list[int]:
    """Valid input sides closest to ``side`` (the one below, if any, and the one at or above).

    ``pool``: the pooling factors along this axis, one per level (default 2 everywhere).

    Examples
    --------
    >>> nearest_valid_sizes(570)
    [556, 572]
    >>> nearest_valid_sizes(30, depth=2, pool=(1, 2))  # an axis pooled only at the 2nd level
    [28, 30]
    """
    (factors,) = _per_axis(pool, check_depth(depth), 1)
    up, down = _valid_sides_around(int(side), factors, check_padding(padding))
    return [s for s in (down, up) if s is not None]


def _shape_tuple(shape, name: str) -> tuple[int, ...]:
    values = (shape,) if isinstance(shape, int) else tuple(shape)
    if not values or any(isinstance(s, bool) or int(s) != s or int(s) < 1 for s in values):
        raise ValueError(f"{name}: expected positive integer sizes, got {shape!r}")
    return tuple(int(s) for s in values)


def valid_input_shape(
    min_shape: int | Sequence[int], depth: int = 4, *, padding: str = "valid", pool=None
) -> tuple[int, ...]:
    """Smallest valid network input that is at least ``min_shape`` along every axis.

    Parameters
    ----------
    min_shape : int or sequence of int
        Minimum spatial input size, e.g. ``(512, 512)`` or ``(D, H, W)``; an int means one side
        (or every axis of a per-axis ``pool``).
    depth : int
        Number of poolings of the network.
    padding : {"valid", "same"}
        Convolution padding of the network.
    pool : None, int or sequence
        Pooling factors per level: an int per level for every axis, or a tuple per level with one
        factor per axis (e.g. ``((1, 2, 2), (2, 2, 2))``; axes aligned to the right). Default 2.

    Returns
    -------
    tuple of int

    Examples
    --------
    >>> valid_input_shape((570, 572))
    (572, 572)
    >>> valid_input_shape(100, depth=2)
    (100,)
    >>> valid_input_shape((20, 100, 100), depth=3, pool=((1, 2, 2), (2, 2, 2), (2, 2, 2)))
    (52, 100, 100)
    """
    depth = check_depth(depth)
    check_padding(padding)
    shape = _shape_tuple(min_shape, "min_shape")
    width = max(len(f) for f in pool_levels(pool, depth) or [()])
    if isinstance(min_shape, int) and width > 1:
        shape = shape * width
    per_axis = _per_axis(pool, depth, len(shape))
    return tuple(_valid_sides_around(s, f, padding)[0] for s, f in zip(shape, per_axis, strict=True))


def valid_output_shape(
    input_shape: Sequence[int], depth: int = 4, *, padding: str = "valid", pool=None
) -> tuple[int, ...]:
    """Output size of a U-Net for a spatial ``input_shape``; ValueError names valid sizes.

    Examples
    --------
    >>> valid_output_shape((572, 572))
    (388, 388)
    >>> valid_output_shape((132, 132, 116), depth=3)  # the 3D U-Net paper's tile
    (44, 44, 28)
    """
    depth = check_depth(depth)
    check_padding(padding)
    shape = _shape_tuple(input_shape, "input_shape")
    per_axis = _per_axis(pool, depth, len(shape))
    out, problems = [], []
    for axis, (side, factors) in enumerate(zip(shape, per_axis, strict=True)):
        o = _side_out(side, factors, padding)
        if o < 1:
            step, offset = _step_offset(factors)
            near = [s for s in _valid_sides_around(side, factors, padding)[::-1] if s is not None]
            smallest = _valid_sides_around(1, factors, padding)[0]
            rule = f"a multiple of {step}" if padding == "same" else f"{step}·m + {offset}"
            rule += f", at least {smallest}"
            problems.append(
                f"input size {side} along spatial axis {axis} is not valid (expected {rule}); "
                f"nearest valid sizes: {' or '.join(map(str, near))}"
            )
        out.append(o)
    if problems:
        raise ValueError(
            f"{'; '.join(problems)} — for a U-Net of depth {depth} with {padding!r} padding: use "
            "one of the nearest valid sizes, or pad or crop the input to one"
        )
    return tuple(out)
