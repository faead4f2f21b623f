"""Private helpers of :mod:`napari_unet.core.augment`: cubic upsampling and mirror resampling.

Everything here is generic over the number of spatial dimensions (2D and 3D alike):

- :func:`cubic_matrix` / :func:`upsample_cubic`: separable cubic-convolution upsampling of a coarse
  lattice with corner-aligned nodes, identical to ``F.interpolate(mode="bicubic",
  align_corners=True)`` in 2D (Keys kernel, ``a = -0.75``) and its tricubic analogue in 3D;
- :func:`warp_batch`: one resampling of image, labels and weights through the composed map;
- :func:`sample`: resampling of a batch at arbitrary coordinates given in pixel-index units, by
  nearest neighbour, (multi)linear or (multi)cubic interpolation, with mirror extrapolation about the
  border pixel centres (``d c b | a b c d | c b a``, ``grid_sample(padding_mode="reflection",
  align_corners=True)``). The interpolation weights are computed in index space, so a coordinate
  that is an exact integer returns the stored value exactly, and labels are gathered, never blended.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

CUBIC_A = -0.75  # the constant of PyTorch's (and OpenCV's) bicubic kernel


def cubic_weights(t: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Keys cubic-convolution weights of the taps at offsets -1, 0, 1, 2 for a fraction ``t``.

    Closed forms of the kernel at ``1 + t``, ``t``, ``1 - t``, ``2 - t``; at ``t = 0`` they are
    exactly (0, 1, 0, 0).
    """
    a = CUBIC_A
    s = 1 - t
    ts = t * s
    t2 = t * t
    w0 = ts * s * a  # a t (1 - t)^2
    w3 = ts * t * a  # a t^2 (1 - t)
    w1 = ((a + 2) * t - (a + 3)) * t2 + 1
    w2 = 1 - w0 - w1 - w3  # the four sum to one
    return w0, w1, w2, w3


@functools.lru_cache(maxsize=64)
def cubic_matrix(n_out: int, n_in: int, *, dtype=torch.float64, device=None) -> torch.Tensor:
    """Matrix ``(n_out, n_in)`` of cubic upsampling with the end nodes on the end pixels.

    Row ``i`` interpolates at the source position ``i * (n_in - 1) / (n_out - 1)`` with the Keys
    kernel; taps outside the lattice are clamped to its edge, as PyTorch's bicubic upsampling does.
    """
    scale = (n_in - 1) / (n_out - 1) if n_out > 1 else 0.0
    pos = torch.arange(n_out, dtype=torch.float64) * scale
    base = torch.floor(pos)
    frac = pos - base
    mat = torch.zeros(n_out, n_in, dtype=torch.float64)
    rows = torch.arange(n_out)
    for offset, w in zip((-1, 0, 1, 2), cubic_weights(frac), strict=True):
        cols = (base.long() + offset).clamp(0, n_in - 1)
        mat.index_put_((rows, cols), w, accumulate=True)
    return mat.to(dtype=dtype, device=device)


def upsample_axis(t: torch.Tensor, axis: int, n_out: int, rows: slice | None = None):
    """Cubic upsampling of ``t`` along ``axis`` to ``n_out`` samples (only ``rows`` of them).

    Broadcast multiply-adds over the few lattice nodes (no BLAS call, which would start threads).
    """
    mat = cubic_matrix(n_out, t.shape[axis], dtype=t.dtype, device=t.device)
    if rows is not None:
        mat = mat[rows]
    view = [1] * (t.ndim - axis)
    view[0] = mat.shape[0]
    acc = None
    for j in range(t.shape[axis]):
        term = t.narrow(axis, j, 1) * mat[:, j].reshape(view)
        acc = term if acc is None else acc.add_(term)
    return acc


def upsample_cubic(coarse: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Upsample ``coarse`` ``(..., *lattice)`` to ``(..., *shape)`` by separable cubic convolution."""
    out = coarse
    for k, n_out in enumerate(shape):
        out = upsample_axis(out, out.ndim - len(shape) + k, n_out)
    return out


def reflect_index(i: torch.Tensor, n: int) -> torch.Tensor:
    """Mirror integer (or float) positions into ``[0, n-1]`` about the border pixel centres.

    The mirrored sequence has period ``2 (n-1)``: ``-1 -> 1``, ``n -> n-2`` (numpy's "reflect").
    """
    if n == 1:
        return torch.zeros_like(i)
    period = 2 * (n - 1)
    if i.numel() and (float(i.min()) < -(n - 1) or float(i.max()) > period):
        i = torch.remainder(i, period)  # far outside: fold to one period first (rare)
    i = i.abs()
    return torch.where(i > n - 1, period - i, i)


def _taps(x: torch.Tensor, n: int, mode: str) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Per-axis (index, weight) pairs for coordinates ``x`` along an axis of length ``n``.

    The coordinate is mirrored into ``[0, n-1]`` first; interpolating the mirrored signal is
    symmetric about both border pixel centres, so this equals mirroring every tap, and only the
    taps that stick out by one or two pixels need folding back.
    """
    x = reflect_index(x, n)  # >= 0 from here: truncation is floor (and avoids the VML kernels
    if mode == "nearest":    # of floor/round, which spawn threads even for small tensors)
        return [((x + 0.5).long(), None)]
    base = x.long()
    frac = x - base
    if mode == "bilinear":  # base + 1 == n only when frac == 0: its weight is 0
        return [(base, 1 - frac), ((base + 1).clamp_(max=n - 1), frac)]
    if n < 3:
        folded = [reflect_index(base + k, n) for k in (-1, 0, 1, 2)]
    else:  # base in [0, n-1]: fold -1 -> 1 and n, n+1 -> n-2, n-3
        period = 2 * (n - 1)
        up = [base + 1, base + 2]
        folded = [(base - 1).abs_(), base,
                  *(torch.where(i > n - 1, period - i, i) for i in up)]
    return list(zip(folded, cubic_weights(frac), strict=True))


def nearest_index(coords: Sequence[torch.Tensor], shape: Sequence[int]) -> torch.Tensor:
    """Flat indices ``(N, L)`` of the nearest (mirrored) source pixels of ``coords``.

    ``coords`` holds one ``(N, *R)`` tensor per axis of ``shape``.
    """
    flat = None
    for axis, n in enumerate(shape):
        (idx, _), = _taps(coords[axis].reshape(coords[axis].shape[0], -1), n, "nearest")
        flat = idx if flat is None else flat * n + idx
    return flat


def gather(src: torch.Tensor, flat_index: torch.Tensor, out_shape: Sequence[int]) -> torch.Tensor:
    """Values of ``src`` ``(N, C, *S)`` or ``(N, *S)`` at flat spatial indices ``(N, L)``."""
    if src.ndim == flat_index.ndim + len(out_shape) - 1:  # (N, *S): no channel axis
        out = torch.gather(src.reshape(src.shape[0], -1), 1, flat_index)
        return out.reshape(src.shape[0], *out_shape)
    n, c = src.shape[:2]
    idx = flat_index.unsqueeze(1).expand(n, c, flat_index.shape[1])
    out = torch.gather(src.reshape(n, c, -1), 2, idx)
    return out.reshape(n, c, *out_shape)


def sample(src: torch.Tensor, coords: Sequence[torch.Tensor], mode: str) -> torch.Tensor:
    """Resample ``src`` ``(N, C, *S)`` at ``coords``, one ``(N, *S_out)`` tensor per axis.

    Coordinates are in pixel-index units.

    ``src`` must be floating point for ``"bilinear"``/``"bicubic"``; ``"nearest"`` keeps any dtype.
    Values outside the array are taken from its mirror image about the border pixel centres.
    """
    shape = src.shape[2:]
    out_shape = coords[0].shape[1:]
    if mode == "nearest":
        return gather(src, nearest_index(coords, shape), out_shape)
    n = coords[0].shape[0]
    per_axis = [
        _taps(coords[axis].reshape(n, -1), size, mode) for axis, size in enumerate(shape)
    ]
    channels = src.shape[1]
    flat_src = src.reshape(n, channels, -1)

    def combine(axis: int, partial: torch.Tensor | None) -> torch.Tensor:
        # sum over this axis' taps of weight * (value combined over the later axes): separable,
        # so 2D bicubic costs 16 gathers but only 4 + 16 multiply-adds
        acc = None
        scaled = None if partial is None else partial * shape[axis]
        for idx, w in per_axis[axis]:
            flat = idx if scaled is None else scaled + idx
            if axis == len(shape) - 1:
                value = torch.gather(flat_src, 2, flat.unsqueeze(1).expand(n, channels, -1))
            else:
                value = combine(axis + 1, flat)
            w = w.unsqueeze(1).to(src.dtype)
            acc = value * w if acc is None else acc.addcmul_(value, w)
        return acc

    return combine(0, None).reshape(n, channels, *out_shape)


WIDE_INTS = (torch.int32, torch.int64, torch.uint32, torch.uint64)
UNGATHERABLE = (torch.uint16, torch.uint32, torch.uint64)


class CoordPlan(NamedTuple):
    """Per-batch pieces of the map ``q = c + M (p - c) + t + d(p)``, evaluated block by block."""

    spatial: tuple[int, ...]
    matrix: torch.Tensor | None  # (N, d, d)
    shift: torch.Tensor  # (N, d): c + t
    displacement: torch.Tensor | None  # (N, d, *spatial)
    lattice: torch.Tensor | None  # (N, d, g0, *spatial[1:]): upsampled along all but axis 0


def plan_coords(spatial, matrix, offset, displacement, device, dtype, lattice=None) -> CoordPlan:
    """Convert the transform once per batch; ``lattice`` (N, d, *grid) are elastic nodes."""
    nd = len(spatial)
    centre = torch.tensor([(s - 1) / 2 for s in spatial], device=device, dtype=dtype)

    def tensor(v):
        return None if v is None else torch.as_tensor(v, dtype=dtype, device=device)

    mat, off, disp = tensor(matrix), tensor(offset), tensor(displacement)
    if lattice is not None:
        lattice = lattice.to(device=device, dtype=dtype)
        for k in range(1, nd):
            lattice = upsample_axis(lattice, 2 + k, spatial[k])
    return CoordPlan(
        tuple(spatial), None if mat is None else mat.reshape(-1, nd, nd),
        (centre if off is None else centre + off.reshape(-1, nd)).reshape(-1, nd),
        None if disp is None else disp.reshape(-1, nd, *spatial), lattice,
    )


def source_coords(plan: CoordPlan, region=None, n: int = 1) -> list[torch.Tensor]:
    """Source coordinates of the output pixels in ``region`` (one slice per axis).

    One ``(N, *R)`` tensor per axis (kept apart, so that no temporary is d times a block).
    """
    spatial = plan.spatial
    nd = len(spatial)
    region = tuple(slice(0, s) for s in spatial) if region is None else tuple(region)
    dtype, device = plan.shift.dtype, plan.shift.device
    rel = []  # centred pixel positions per axis, shaped to broadcast over (N, *R)
    for k, (r, s) in enumerate(zip(region, spatial, strict=True)):
        view = [1] * (nd + 1)
        view[k + 1] = r.stop - r.start
        rel.append((torch.arange(r.start, r.stop, device=device, dtype=dtype) - (s - 1) / 2)
                   .reshape(view))
    per_axis = []
    for i in range(nd):
        shift = plan.shift[:, i].reshape(-1, *([1] * nd))
        if plan.matrix is None:
            terms = [rel[i] + shift]
        else:  # M (p - c) as broadcast multiply-adds of small vectors (no BLAS for a d×d matrix)
            mat = plan.matrix[:, i].reshape(-1, nd, *([1] * nd))
            terms = [mat[:, j] * rel[j] for j in range(nd)]
            terms[0] = terms[0] + shift
        acc = terms[0]
        for term in terms[1:]:
            acc = acc + term
        acc = acc.expand(max(n, acc.shape[0]), *(r.stop - r.start for r in region))
        inner = (slice(None), i, *region)
        if plan.displacement is not None:
            acc = acc + plan.displacement[inner]
        if plan.lattice is not None:
            acc = acc + upsample_axis(plan.lattice[(slice(None), i, slice(None), *region[1:])], 1,
                                      spatial[0], region[0])
        per_axis.append(acc)
    return per_axis


def _row_blocks(region: tuple[slice, ...], rows: int | None):
    """Split ``region`` along its first axis into blocks of at most ``rows`` rows."""
    first = region[0]
    step = first.stop - first.start if rows is None else max(1, rows)
    for r0 in range(first.start, first.stop, step):
        yield (slice(r0, min(first.stop, r0 + step)), *region[1:])


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 and wide integer images (exact beyond 2**24), float32 otherwise."""
    return torch.float64 if dtype in (torch.float64, *WIDE_INTS) else torch.float32


def warp_batch(image, labels, weights, matrix, offset, displacement, image_interp, out_shape,
               *, lattice=None, block_elements: int | None = None):
    """``augment.warp`` returning the image in its compute dtype (float32 or float64).

    Labels and weights use the same nearest indices (of the ``out_shape`` centre region).
    ``lattice`` (N, d, *grid) is an elastic field given by its nodes, upsampled block by block.
    ``block_elements`` bounds the largest temporary of a pass (rows at a time): on the CPU, below
    PyTorch's parallel grain size (32768) every operation runs serially in cache, with no
    thread-pool barriers (which stall badly on a shared, oversubscribed machine). The result does
    not depend on it.
    """
    if image_interp not in ("bilinear", "bicubic"):
        raise ValueError(f"image_interp: expected 'bilinear' or 'bicubic', got {image_interp!r}")
    n, channels = image.shape[:2]
    spatial = tuple(image.shape[2:])
    work = compute_dtype(image.dtype)
    row = n * math.prod(spatial[1:])
    rows, label_rows = None, None
    if block_elements is not None:
        rows = max(1, block_elements // max(row * channels, 1))
        label_rows = max(1, block_elements // max(row, 1))
    src = image.to(work)
    out = torch.empty((n, channels, *spatial), dtype=work, device=image.device)
    full = tuple(slice(0, s) for s in spatial)
    plan = plan_coords(spatial, matrix, offset, displacement, image.device, work, lattice)
    maps = [None if t is None else (t.to(torch.int64) if t.dtype in UNGATHERABLE else t)
            for t in (labels, weights)]
    shape = spatial if out_shape is None else tuple(int(o) for o in out_shape)
    tops = [(s - o) // 2 for s, o in zip(spatial, shape, strict=True)]
    region = tuple(slice(t, t + o) for t, o in zip(tops, shape, strict=True))
    results = [None if t is None else torch.empty((n, *shape), dtype=t.dtype, device=t.device)
               for t in maps]

    def gather_maps(coords, block):
        flat = nearest_index(coords, spatial)
        local = tuple(slice(b.start - t, b.stop - t) for b, t in zip(block, tops, strict=True))
        for t, res in zip(maps, results, strict=True):
            if t is not None:
                res[(slice(None), *local)] = gather(t, flat, coords[0].shape[1:])

    has_maps = any(t is not None for t in maps)
    together = has_maps and region == full  # whole tile: share the image pass's coordinates
    for block in _row_blocks(full, rows):
        coords = source_coords(plan, block, n)
        out[(slice(None), slice(None), *block)] = sample(src, coords, image_interp)
        if together:
            gather_maps(coords, block)
    if has_maps and not together:
        for block in _row_blocks(region, label_rows):
            coords = source_coords(plan, block, n)
            gather_maps(coords, block)
    return out, *(None if r is None else r.to(t.dtype)
                  for r, t in zip(results, (labels, weights), strict=True))


def check_batch(image, labels, weights, out_shape) -> None:
    """Raise TypeError/ValueError naming the argument when a batch does not fit together."""
    for name, t in (("image", image), ("labels", labels), ("weights", weights)):
        if t is not None and not isinstance(t, torch.Tensor):
            raise TypeError(
                f"{name}: expected a torch.Tensor, got {type(t).__name__}; use elastic_deform "
                "for numpy arrays or torch.as_tensor(...)"
            )
    if image.ndim < 4:
        raise ValueError(f"image: expected a batch (N, C, H, W), got shape {tuple(image.shape)}; "
                         "add axes with image[None, None]")
    expected = (image.shape[0], *image.shape[2:])
    for name, t in (("labels", labels), ("weights", weights)):
        if t is not None and tuple(t.shape) != expected:
            raise ValueError(f"{name}: expected shape {expected} (the image's N and spatial "
                             f"axes), got {tuple(t.shape)}")
    if out_shape is not None and (
        len(out_shape) != image.ndim - 2
        or any(not 1 <= int(o) <= s for o, s in zip(out_shape, image.shape[2:], strict=True))
    ):
        raise ValueError(f"out_shape: expected {image.ndim - 2} sides within the image's "
                         f"{tuple(image.shape[2:])}, got {out_shape!r}")
