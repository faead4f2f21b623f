"""What the augmentation draws for each sample: :class:`AugmentConfig`."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["AugmentConfig"]


def _range(name: str, value) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a pair (low, high) of numbers, got {value!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        raise ValueError(f"{name}: expected 0 < low <= high, got {value!r}; use (1, 1) to disable")
    return lo, hi


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    """What :func:`augment_batch` draws for each sample; :meth:`none` disables everything.

    Parameters
    ----------
    elastic_sigma : float
        Standard deviation (pixels) of the displacement vectors on the coarse lattice; 0 disables.
    elastic_grid : int
        Nodes of the coarse lattice per axis (spanning the whole tile, corners included).
    rotate : bool
        Rotation by an angle uniform in [0, 360°) about the tile centre.
    flip : bool
        Mirror each axis with probability 1/2.
    shift : float
        Translation uniform in [-shift, shift] pixels per axis.
    scale : (float, float)
        Isotropic zoom factor, log-uniform in this range (> 1 magnifies).
    brightness : float
        Additive offset uniform in [-brightness, brightness], in units of the sample's gray-value
        range (max - min after resampling).
    contrast : (float, float)
        Factor, log-uniform in this range, applied about the sample's mean.
    gamma : (float, float)
        Exponent, log-uniform in this range, applied to the gray values rescaled to [0, 1].
    noise_std : float
        Standard deviation of additive Gaussian noise, in units of the gray-value range.
    image_interp : {"bilinear", "bicubic"}
        Interpolation of the image (labels and weights always use nearest neighbour).

    Examples
    --------
    >>> AugmentConfig.none().elastic_sigma
    0.0
    >>> AugmentConfig(rotate=False).elastic_grid
    3
    """

    elastic_sigma: float = 10.0
    elastic_grid: int = 3
    rotate: bool = True
    flip: bool = True
    shift: float = 5.0
    scale: tuple[float, float] = (0.9, 1.1)
    brightness: float = 0.1
    contrast: tuple[float, float] = (0.9, 1.1)
    gamma: tuple[float, float] = (0.8, 1.25)
    noise_std: float = 0.0
    image_interp: str = "bilinear"

    def __post_init__(self):
        for name in ("elastic_sigma", "shift", "brightness", "noise_std"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise ValueError(f"{name}: expected a number >= 0 (0 disables), got {value!r}")
        grid = self.elastic_grid
        if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 1:
            raise ValueError(f"elastic_grid: expected an integer >= 1 (the paper: 3), got {grid!r}")
        for name in ("scale", "contrast", "gamma"):
            object.__setattr__(self, name, _range(name, getattr(self, name)))
        if self.image_interp not in ("bilinear", "bicubic"):
            raise ValueError(
                f"image_interp: expected 'bilinear' or 'bicubic', got {self.image_interp!r}"
            )

    @classmethod
    def none(cls, **changes) -> AugmentConfig:
        """A configuration that changes nothing (the identity); ``changes`` switch parts back on."""
        off = dict(elastic_sigma=0.0, rotate=False, flip=False, shift=0.0, scale=(1.0, 1.0),
                   brightness=0.0, contrast=(1.0, 1.0), gamma=(1.0, 1.0), noise_std=0.0)
        return cls(**{**off, **changes})
