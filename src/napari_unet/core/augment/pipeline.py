"""Random elastic, geometric and gray-value augmentation, in torch, on the training device.

The paper's recipe (Ronneberger et al. 2015, section 3.1): displacement vectors on a coarse 3×3
lattice spanning the tile, drawn from a Gaussian with 10 px standard deviation, per-pixel
displacements by bicubic interpolation; plus shift, rotation and gray-value variation.

All geometric parts (elastic displacement, rotation about the tile centre, flips, shift, isotropic
scale) are composed into ONE map from output to source pixel coordinates,
``q = c + M (p - c) + t + d(p)`` (``c`` the tile centre, ``M`` rotation · scale · flip, ``t`` the
shift, ``d`` the elastic field), and every array is resampled once from it:

- the image bilinearly or bicubically (``image_interp``);
- the labels by nearest neighbour — values are gathered, never blended, so any integer id survives;
- the weight map (and any ``annotated`` / ignore mask carried in it) with the *same* nearest indices
  as the labels, so it stays exactly 0 wherever the resampled labels are unannotated.

Outside the tile the data are mirrored about the border pixel centres (the paper's mirror
extrapolation). Gray-value changes (gamma, contrast, brightness, noise) act on the image only, after
resampling. Everything runs on the device of the input tensors; random numbers come from a
``torch.Generator`` (CPU), so a seed gives the same result on any device.

The code is generic over the spatial dimensions except the rotation, which for 3D volumes ``(D, H,
W)`` turns within the ``(H, W)`` planes (:func:`_random_matrix`); a grid³ elastic field and the
resampling are already n-dimensional.

On the CPU the resampling works in cache-sized row blocks whose operations stay below PyTorch's
parallel grain size, so it runs serially and never stalls on thread-pool barriers of a busy
machine: about 10 ms per 572×572 image + labels + weights (bilinear), 6× the ``elasticdeform``
package (``benchmarks/bench_augment.py``). On a GPU a batch is one pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

import napari_unet.core.augment.intensity as intensity
import napari_unet.core.augment.resample as resample
from napari_unet.core.augment.config import AugmentConfig

__all__ = [
    "Augmenter",
    "augment_batch",
    "elastic_deform",
    "random_displacement",
    "warp",
]

_CPU_CHUNK_PIXELS = 2**19  # pixels per sample chunk on the CPU (one 572² tile)
_CPU_BLOCK_ELEMENTS = 24576  # largest temporary per resampling pass on the CPU (serial, in cache)


def _block_elements(t: torch.Tensor) -> int | None:
    return _CPU_BLOCK_ELEMENTS if t.device.type == "cpu" else None


def random_displacement(
    shape: Sequence[int],
    *,
    grid: int | Sequence[int] = 3,
    sigma: float = 10.0,
    batch: int | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Random elastic displacement field, in pixels: ``(d, *shape)`` or ``(batch, d, *shape)``.

    Vectors on a ``grid``-per-axis lattice whose end nodes sit on the first and last pixels are
    drawn from N(0, sigma²) per component and interpolated to every pixel by (bi/tri)cubic
    convolution (identical to ``F.interpolate(mode="bicubic", align_corners=True)`` in 2D).
    At the lattice nodes each component therefore has standard deviation ``sigma`` exactly; between
    them the interpolation averages neighbouring nodes, so the RMS over all pixels is smaller
    (0.77 σ for a 3×3 lattice). Component ``k`` is the displacement along axis ``k``.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> random_displacement((5, 7), grid=3, sigma=2.0, generator=g).shape
    torch.Size([2, 5, 7])
    """
    shape = tuple(int(s) for s in shape)
    grids = (grid,) * len(shape) if isinstance(grid, (int, np.integer)) else tuple(grid)
    if len(grids) != len(shape) or any(int(g) < 1 for g in grids):
        raise ValueError(f"grid: expected an integer >= 1 or one per axis of {shape}, got {grid!r}")
    coarse = _draw_lattice(1 if batch is None else int(batch), shape, grids, sigma, generator)
    field = resample.upsample_cubic(coarse, shape)
    field = field.to(device=device, dtype=dtype)
    return field[0] if batch is None else field


def _draw_lattice(n, shape, grid, sigma, generator) -> torch.Tensor:
    """(n, d, *grid) float64 node displacements ~ N(0, sigma²)."""
    grids = (grid,) * len(shape) if isinstance(grid, (int, np.integer)) else tuple(grid)
    coarse = torch.randn((n, len(shape), *grids), generator=generator, dtype=torch.float64)
    return coarse * float(sigma)


def _random_matrix(
    n: int, ndim: int, config: AugmentConfig, generator: torch.Generator | None
) -> torch.Tensor:
    """(n, ndim, ndim) float64 matrices rotation · scale · flip (rotation and flips in the last
    two axes: the xy plane of a volume, so z never mixes with x or y)."""
    u = torch.rand((n, 2 + ndim), generator=generator, dtype=torch.float64)
    angle = u[:, 0] * (2 * math.pi) if config.rotate else torch.zeros(n, dtype=torch.float64)
    lo, hi = config.scale
    scale = torch.exp(math.log(lo) + u[:, 1] * (math.log(hi) - math.log(lo)))
    flips = torch.where(u[:, 2:] < 0.5, -1.0, 1.0) if config.flip else torch.ones(n, ndim)
    if ndim > 2:  # volumes: flips (like the rotation) within the xy planes only; z is kept
        flips[:, : ndim - 2] = 1.0
    mat = torch.eye(ndim, dtype=torch.float64).repeat(n, 1, 1)
    cos, sin = torch.cos(angle), torch.sin(angle)
    mat[:, -2, -2], mat[:, -2, -1], mat[:, -1, -2], mat[:, -1, -1] = cos, -sin, sin, cos
    return mat * (scale[:, None, None] * flips.to(torch.float64)[:, None, :])


def warp(
    image: torch.Tensor,
    labels: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    *,
    matrix=None,
    offset=None,
    displacement=None,
    image_interp: str = "bilinear",
    out_shape: Sequence[int] | None = None,
):
    """Resample a batch once through ``q = c + M (p - c) + offset + displacement(p)``.

    ``image`` is ``(N, C, *S)``, ``labels`` and ``weights`` ``(N, *S)`` (or None); ``matrix`` is
    ``(d, d)`` or ``(N, d, d)``, ``offset`` ``(d,)`` or ``(N, d)``, ``displacement``
    ``(N, d, *S)`` in pixels; ``c`` is the tile centre and ``p`` the output pixel index. Returns
    ``(image, labels, weights)`` with ``None`` where nothing was given; dtypes are kept (integer
    images are rounded and clipped). ``out_shape`` centre-crops the labels and weights (e.g. to the
    U-Net's output region) and resamples only that region of them.

    Examples
    --------
    >>> x = torch.arange(9.0).reshape(1, 1, 3, 3)
    >>> quarter = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    >>> warp(x, matrix=quarter)[0][0, 0].tolist() == np.rot90(x[0, 0].numpy()).tolist()
    True
    """
    resample.check_batch(image, labels, weights, out_shape)
    out, lab, wts = resample.warp_batch(
        image, labels, weights, matrix, offset, displacement, image_interp, out_shape,
        block_elements=_block_elements(image),
    )
    return intensity.restore_dtype(out, image.dtype, block=_block_elements(image)), lab, wts


def augment_batch(
    image: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    config: AugmentConfig | None = None,
    generator: torch.Generator | None = None,
    out_shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
):
    """Randomly augment a batch (one independent draw per sample); used by the training loop.

    2D ``(N, C, H, W)`` and 3D ``(N, C, Z, Y, X)`` alike: in 3D the rotation and the flips act
    in the xy planes only (z never mixes with x or y, whatever the voxel size); the elastic
    field and the shift are 3D.

    Parameters
    ----------
    image : Tensor (N, C, *S)
        Any real dtype; float16/bfloat16 are computed in float32, integer images are rounded and
        clipped to their dtype.
    labels : Tensor (N, *S)
        Integer (or bool) labels / training target; resampled by nearest neighbour.
    weights : Tensor (N, *S), optional
        Weight map or annotated mask; resampled with the labels' nearest indices.
    config : AugmentConfig, optional
        What to draw; ``AugmentConfig()`` (the defaults) when None.
    generator : torch.Generator, optional
        CPU generator for reproducible draws; torch's global generator when None.
    out_shape : sequence of int, optional
        Centre crop of the labels and weights to return (only that region is resampled).
    spacing : sequence of float, optional
        Voxel size per axis (anisotropic volumes): the elastic displacements and the shift,
        drawn in units of the finest axis, are divided by each axis' size relative to it, so
        they are isotropic in space (a z step 4× the xy pixel moves z by a quarter as many
        voxels). None: isotropic.

    Returns
    -------
    (image, labels) or (image, labels, weights) when ``weights`` is given; same dtypes and device.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x, y = torch.rand(2, 1, 32, 32), torch.randint(0, 3, (2, 32, 32))
    >>> xa, ya = augment_batch(x, y, generator=g)
    >>> xa.shape, ya.shape, bool(set(ya.unique().tolist()) <= {0, 1, 2})
    (torch.Size([2, 1, 32, 32]), torch.Size([2, 32, 32]), True)
    """
    config = AugmentConfig() if config is None else config
    resample.check_batch(image, labels, weights, out_shape)
    n, spatial = image.shape[0], tuple(image.shape[2:])
    nd = len(spatial)
    # every random number is drawn up front, so the result does not depend on the chunking below
    matrix = _random_matrix(n, nd, config, generator)
    shift = (2 * torch.rand((n, nd), generator=generator, dtype=torch.float64) - 1) * config.shift
    coarse = None
    if config.elastic_sigma > 0:
        coarse = _draw_lattice(n, spatial, config.elastic_grid, config.elastic_sigma, generator)
    if spacing is not None:
        space = torch.as_tensor([float(v) for v in spacing], dtype=torch.float64)
        if space.shape != (nd,) or not bool(torch.all(space > 0)):
            raise ValueError(f"spacing: expected {nd} positive voxel sizes, got {spacing!r}")
        rel = space.min() / space  # 1 on the finest axis, < 1 on coarser ones
        shift = shift * rel
        if coarse is not None:
            coarse = coarse * rel.view(1, nd, *(1,) * nd)
    gray, noise = None, None
    if intensity.changes_gray_values(config):
        gray = torch.rand((n, 3), generator=generator, dtype=torch.float64)
        if config.noise_std > 0:
            gen_device = generator.device if generator is not None else torch.device("cpu")
            noise = torch.randn(image.shape, generator=generator, device=gen_device)
    # on the CPU, a few samples at a time: temporaries stay in cache and the allocator re-uses them
    pixels = math.prod(spatial)
    step = n if image.device.type != "cpu" else max(1, _CPU_CHUNK_PIXELS // max(pixels, 1))
    parts = []
    for start in range(0, n, step):
        sl = slice(start, min(n, start + step))
        out, lab, wts = resample.warp_batch(
            image[sl], labels[sl], None if weights is None else weights[sl], matrix[sl],
            shift[sl], None, config.image_interp, out_shape,
            lattice=None if coarse is None else coarse[sl], block_elements=_block_elements(image),
        )
        if gray is not None:
            out = intensity.gray_values(out, config, gray[sl], None if noise is None else noise[sl],
                                        block=_block_elements(image))
        out = intensity.restore_dtype(out, image.dtype, block=_block_elements(image))
        parts.append((out, lab, wts))
    out, lab, wts = parts[0] if len(parts) == 1 else [
        None if p[0] is None else intensity.concat(p, block=_block_elements(image))
        for p in zip(*parts, strict=True)
    ]
    return (out, lab) if weights is None else (out, lab, wts)


class Augmenter:
    """An :class:`AugmentConfig` with its own seeded generator: ``augmenter(image, labels, ...)``.

    Examples
    --------
    >>> aug = Augmenter(AugmentConfig(rotate=False), seed=1)
    >>> aug(torch.zeros(1, 1, 16, 16), torch.zeros(1, 16, 16, dtype=torch.int64))[0].shape
    torch.Size([1, 1, 16, 16])
    """

    def __init__(self, config: AugmentConfig | None = None, *, seed: int | None = None):
        self.config = AugmentConfig() if config is None else config
        self.generator = torch.Generator()
        if seed is None:
            self.generator.seed()
        else:
            self.generator.manual_seed(int(seed))

    def __call__(self, image, labels, weights=None, *, out_shape=None):
        return augment_batch(image, labels, weights, config=self.config,
                             generator=self.generator, out_shape=out_shape)


def elastic_deform(image, labels, weights=None, *, grid=3, sigma=10.0, seed=None,
                   image_interp: str = "bilinear"):
    """Elastic deformation of one image with its labels (and weight map), the paper's recipe.

    Parameters
    ----------
    image : ndarray or Tensor, (*S) or channels-first (C, *S)
        ``S`` is the labels' shape: (H, W) (or (D, H, W) for a volume).
    labels : ndarray or Tensor, (*S)
        Integer labels; resampled by nearest neighbour, so values after ⊆ values before.
    weights : ndarray or Tensor, (*S), optional
        Weight map / annotated mask, resampled with the same nearest indices as the labels.
    grid : int
        Nodes of the coarse lattice per axis (the paper: 3).
    sigma : float
        Standard deviation of the node displacements, in pixels (the paper: 10).
    seed : int, optional
        Same seed → same result; a fresh random draw when None.
    image_interp : {"bilinear", "bicubic"}
        Interpolation of the image.

    Returns
    -------
    (image, labels) or, when ``weights`` is given, (image, labels, weights): same type (numpy or
    torch), shapes, dtypes and device as the inputs.

    Examples
    --------
    >>> img = np.arange(64, dtype=np.uint8).reshape(8, 8)
    >>> lab = (img > 30).astype(np.int32)
    >>> out, lab2 = elastic_deform(img, lab, sigma=2.0, seed=0)
    >>> out.shape, out.dtype, set(np.unique(lab2)) <= {0, 1}
    ((8, 8), dtype('uint8'), True)
    """
    is_numpy = isinstance(image, np.ndarray)
    for name, t in (("labels", labels), ("weights", weights)):
        if t is not None and isinstance(t, np.ndarray) != is_numpy:
            raise TypeError(f"{name}: expected the same kind of array as image "
                            f"({type(image).__name__}), got {type(t).__name__}")
    if not is_numpy and not isinstance(image, torch.Tensor):
        raise TypeError(f"image: expected a numpy array or torch.Tensor, got {type(image)}")
    to_t = (lambda a: torch.from_numpy(np.ascontiguousarray(a))) if is_numpy else (lambda a: a)
    img, lab = to_t(image), to_t(labels)
    wts = None if weights is None else to_t(weights)
    if img.ndim not in (lab.ndim, lab.ndim + 1) or tuple(img.shape[-lab.ndim:]) != tuple(lab.shape):
        raise ValueError(f"image: expected shape {tuple(lab.shape)} (the labels') or (C, "
                         f"{', '.join(map(str, lab.shape))}), got {tuple(img.shape)}")
    batch = img[None] if img.ndim == lab.ndim + 1 else img[None, None]
    config = AugmentConfig.none(elastic_sigma=float(sigma), elastic_grid=grid,
                                image_interp=image_interp)
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(int(seed))
    res = augment_batch(batch, lab[None], None if wts is None else wts[None], config=config,
                        generator=generator)
    res = (res[0].reshape(img.shape), *(r[0] for r in res[1:]))
    return tuple(r.numpy() for r in res) if is_numpy else res
