"""Distances to the nearest and second-nearest cell, exactly, in one separable sweep per axis.

Private helper of :mod:`napari_unet.core.weights`. For every pixel we keep the two nearest
features *with distinct labels* — (squared distance, label) of the nearest cell pixel, and
(squared distance, label) of the nearest pixel of any *other* cell. This pair is separable like
the ordinary Euclidean distance transform: the nearest feature with a label other than ``c`` along
a line is either the line's nearest feature (if its label is not ``c``) or the line's nearest
feature with a label different from that one. So

1. along axis 0, two sweeps (down, up) give each pixel the two-distinct-nearest of its column;
2. along every further axis, each pixel merges the pairs of the pixels on its line, adding the
   squared offset, and keeps the two-distinct-nearest.

Only features within ``cutoff`` matter (the border term is below the caller's tolerance beyond),
so the merge scans outwards and stops as soon as the offset alone exceeds the current second
distance or the cutoff. Whenever the true ``d2 <= cutoff`` both distances are exact; otherwise the
result is a lower bound of nothing useful and the caller treats it as "far".

The kernels are compiled with numba when it is installed; without numba the caller uses an
exact scipy fallback (one distance transform per cell, cropped to the cell's box ± cutoff).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

try:  # optional accelerator
    from numba import njit
except ImportError:  # pragma: no cover - exercised where numba is missing
    njit = None

__all__ = ["HAVE_NUMBA", "border_term"]

HAVE_NUMBA = njit is not None


def _jit(func):
    return njit(cache=True, nogil=True)(func) if HAVE_NUMBA else func


# Reassociation lets LLVM vectorise the window minimum; infinities stay meaningful ("ninf" is off).
_FASTMATH = {"nnan", "nsz", "reassoc", "arcp", "contract", "afn"}


def _jit_fast(func):
    return njit(cache=True, nogil=True, fastmath=_FASTMATH)(func) if HAVE_NUMBA else func


@_jit
def _insert(b1, l1, b2, l2, v, lab):
    """Insert candidate (v, lab) into the running two-distinct-nearest (b1, l1, b2, l2)."""
    if lab == l1:
        if v < b1:
            b1 = v
    elif v < b1:
        b2 = b1
        l2 = l1
        b1 = v
        l1 = lab
    elif v < b2:
        b2 = v
        l2 = lab
    return b1, l1, b2, l2


@_jit
def _first_pass(cells, step, cut2):
    """Two-distinct-nearest along axis 0 of ``cells`` (L, M); labels > 0 are features."""
    n, m = cells.shape
    f1 = np.full((n, m), np.inf, dtype=np.float32)
    f2 = np.full((n, m), np.inf, dtype=np.float32)
    l1 = np.zeros((n, m), dtype=np.int32)
    l2 = np.zeros((n, m), dtype=np.int32)
    r1 = np.zeros(m, dtype=np.int64)
    r2 = np.zeros(m, dtype=np.int64)
    a1 = np.zeros(m, dtype=np.int32)
    a2 = np.zeros(m, dtype=np.int32)
    for i in range(n):  # downwards: nearest above (inclusive)
        for j in range(m):
            lab = cells[i, j]
            if lab != 0:
                if lab != a1[j]:
                    r2[j] = r1[j]
                    a2[j] = a1[j]
                    a1[j] = lab
                r1[j] = i
            if a1[j] != 0:
                d = (i - r1[j]) * step
                if d * d <= cut2:
                    f1[i, j] = d * d
                    l1[i, j] = a1[j]
                    if a2[j] != 0:
                        d = (i - r2[j]) * step
                        if d * d <= cut2:
                            f2[i, j] = d * d
                            l2[i, j] = a2[j]
    a1[:] = 0
    a2[:] = 0
    for i in range(n - 1, -1, -1):  # upwards: nearest below, merged in
        for j in range(m):
            lab = cells[i, j]
            if lab != 0:
                if lab != a1[j]:
                    r2[j] = r1[j]
                    a2[j] = a1[j]
                    a1[j] = lab
                r1[j] = i
            if a1[j] != 0:
                d = (r1[j] - i) * step
                if d * d <= cut2:
                    b1, c1, b2, c2 = _insert(f1[i, j], l1[i, j], f2[i, j], l2[i, j], d * d, a1[j])
                    if a2[j] != 0:
                        d = (r2[j] - i) * step
                        if d * d <= cut2:
                            b1, c1, b2, c2 = _insert(b1, c1, b2, c2, d * d, a2[j])
                    f1[i, j] = b1
                    l1[i, j] = c1
                    f2[i, j] = b2
                    l2[i, j] = c2
    return f1, l1, f2, l2


@_jit
def _scan(f1, l1, f2, l2, a, j, b, step, kmax):
    """Two-distinct-nearest at (a, j, b) from the pairs of the pixels (a, k, b), |k - j| <= kmax.

    First the nearest (d1², c1): the minimum of offset² + f1. Then the nearest with a label other
    than c1: on each line that is f1 if its label is not c1, else f2. Both scans go outwards and
    stop once the offset alone reaches the best value.
    Pixels without a feature hold (inf, 0).
    """
    n = f1.shape[1]
    b1 = f1[a, j, b]
    c1 = l1[a, j, b]
    for dk in range(1, kmax + 1):
        off = (dk * step) * (dk * step)
        if off >= b1:
            break
        k = j - dk
        if k >= 0 and f1[a, k, b] + off < b1:
            b1 = f1[a, k, b] + off
            c1 = l1[a, k, b]
        k = j + dk
        if k < n and f1[a, k, b] + off < b1:
            b1 = f1[a, k, b] + off
            c1 = l1[a, k, b]
    if c1 == 0:
        return b1, c1, np.inf, 0
    b2 = np.inf
    c2 = 0
    for dk in range(kmax + 1):
        r = dk * step
        off = r * r
        if off >= b2:
            break
        for k in (j - dk, j + dk):
            if 0 <= k < n:
                if l1[a, k, b] != c1:
                    v = f1[a, k, b] + off
                    if v < b2:
                        b2 = v
                        c2 = l1[a, k, b]
                else:
                    v = f2[a, k, b] + off
                    if v < b2:
                        b2 = v
                        c2 = l2[a, k, b]
    return b1, c1, b2, c2


@_jit
def _merge_pass(f1, l1, f2, l2, step, cut2, kmax):
    """Two-distinct-nearest along the middle axis of (A, L, B) arrays, for every pixel."""
    na, n, nb = f1.shape
    g1 = np.full((na, n, nb), np.inf, dtype=np.float32)
    g2 = np.full((na, n, nb), np.inf, dtype=np.float32)
    m1 = np.zeros((na, n, nb), dtype=np.int32)
    m2 = np.zeros((na, n, nb), dtype=np.int32)
    for a in range(na):
        for j in range(n):
            for b in range(nb):
                b1, c1, b2, c2 = _scan(f1, l1, f2, l2, a, j, b, step, kmax)
                if b1 <= cut2:
                    g1[a, j, b] = b1
                    m1[a, j, b] = c1
                    if b2 <= cut2:
                        g2[a, j, b] = b2
                        m2[a, j, b] = c2
    return g1, m1, g2, m2


@_jit_fast
def _final_pass(f1, l1, f2, l2, step, kmax, where, cutoff, w0, inv2s2):
    """Border term w0·exp(-(d1 + d2)² / (2σ²)) along the last axis of (A, L) arrays.

    d1 by an outward scan that stops at the first offset past the best value; d2 — the nearest
    feature whose label is not c1 — by a branch-free (SIMD) minimum over the window
    |offset| < cutoff - d1, beyond which the term is negligible anyway.
    """
    na, n = f1.shape
    out = np.zeros((na, n), dtype=np.float32)
    for a in range(na):
        r1 = f1[a]
        q1 = l1[a]
        r2 = f2[a]
        mask = where[a]
        for j in range(n):
            if not mask[j]:
                continue
            b1 = r1[j]
            c1 = q1[j]
            for dk in range(1, kmax + 1):
                off = np.float32((dk * step) * (dk * step))
                if off >= b1:
                    break
                k = j - dk
                if k >= 0 and r1[k] + off < b1:
                    b1 = r1[k] + off
                    c1 = q1[k]
                k = j + dk
                if k < n and r1[k] + off < b1:
                    b1 = r1[k] + off
                    c1 = q1[k]
            if c1 == 0:
                continue
            d1 = math.sqrt(b1)
            m = min(int((cutoff - d1) / step) + 1, kmax)
            b2 = np.float32(np.inf)
            for k in range(max(j - m, 0), min(j + m + 1, n)):
                dd = np.float32((k - j) * step)
                h = r1[k] if q1[k] != c1 else r2[k]
                b2 = min(b2, h + dd * dd)
            s = d1 + math.sqrt(b2)
            if s < cutoff:
                out[a, j] = w0 * math.exp(-s * s * inv2s2)
    return out


def _border_term_numba(cells, where, spacing, cutoff, w0, sigma):
    shape = cells.shape
    cut2 = cutoff * cutoff
    inv2s2 = 1.0 / (2.0 * sigma * sigma)
    f1, l1, f2, l2 = _first_pass(cells.reshape(shape[0], -1), float(spacing[0]), cut2)
    for axis in range(1, len(shape) - 1):  # 3D: the middle axis, for every pixel
        view = (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :]))
        step = float(spacing[axis])
        kmax = math.floor(cutoff / step) + 1
        f1, l1, f2, l2 = (x.reshape(view) for x in (f1, l1, f2, l2))
        f1, l1, f2, l2 = _merge_pass(f1, l1, f2, l2, step, cut2, kmax)
    view = (math.prod(shape[:-1]), shape[-1])
    step = float(spacing[-1])
    kmax = math.floor(cutoff / step) + 1
    f1, l1, f2, l2 = (x.reshape(view) for x in (f1, l1, f2, l2))
    out = _final_pass(f1, l1, f2, l2, step, kmax, where.reshape(view), cutoff, w0, inv2s2)
    return out.reshape(shape)


def _border_term_scipy(cells, where, spacing, cutoff, w0, sigma):
    """Exact fallback: one distance transform per cell, cropped to its box ± cutoff."""
    d1 = np.full(cells.shape, np.inf, dtype=np.float32)
    d2 = np.full(cells.shape, np.inf, dtype=np.float32)
    pad = [math.ceil(cutoff / s) + 1 for s in spacing]
    # Consecutive ids 1..N for find_objects; 0 stays background.
    ids, compact = np.unique(cells, return_inverse=True)
    compact = compact.reshape(cells.shape).astype(np.int32) + (0 if ids[0] == 0 else 1)
    for lab, box in enumerate(ndi.find_objects(compact), start=1):
        if box is None:
            continue
        crop = tuple(
            slice(max(sl.start - p, 0), min(sl.stop + p, n))
            for sl, p, n in zip(box, pad, cells.shape, strict=True)
        )
        dist = ndi.distance_transform_edt(compact[crop] != lab, sampling=spacing)
        a, b = d1[crop], d2[crop]
        np.minimum(b, np.maximum(a, dist), out=b)
        np.minimum(a, dist, out=a)
    s = d1 + d2
    keep = where & (s < cutoff)
    out = np.zeros(cells.shape, dtype=np.float32)
    out[keep] = w0 * np.exp(-(s[keep].astype(np.float64) ** 2) / (2.0 * sigma**2))
    return out


def border_term(cells, where, *, spacing, cutoff, w0, sigma, method="auto"):
    """w0·exp(-(d1 + d2)² / (2σ²)) where ``where`` is True and d1 + d2 < cutoff, else 0.

    ``cells``: int32 ids (0 = not a cell); ``where``: bool mask; ``spacing``: per-axis floats.
    ``method``: "numba", "scipy" or "auto" (numba when installed). Returns float32.
    """
    if method == "auto":
        method = "numba" if HAVE_NUMBA else "scipy"
    if method == "numba":
        if not HAVE_NUMBA:
            raise ValueError("method: 'numba' needs the numba package; pip install numba")
        return _border_term_numba(cells, where, spacing, cutoff, w0, sigma)
    if method == "scipy":
        return _border_term_scipy(cells, where, spacing, cutoff, w0, sigma)
    raise ValueError(f"method: expected 'auto', 'numba' or 'scipy', got {method!r}")
