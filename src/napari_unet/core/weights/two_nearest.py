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
so the scans along the later axes go outwards and stop as soon as the offset alone exceeds the
best distance found, and the last axis only looks for d2 within ``cutoff - d1``. Whenever the true
``d1 + d2 < cutoff`` both distances are exact; otherwise the pixel is "far" and its term is 0 (the
true term is below ``w0·exp(-cutoff² / (2σ²))`` there). The last pass evaluates the border term
directly, only on the pixels the caller asks for (the target's background).

Cost: linear in the pixels (two sweeps, then about ``cutoff`` steps per background pixel),
independent of the number of cells; memory about 34 bytes per pixel.

The kernels are compiled with numba when it is installed (single-threaded, cached on disk:
the first call in a fresh environment compiles for a few seconds); without numba the caller uses
an exact scipy fallback (one distance transform per cell, cropped to the cell's box ± cutoff),
several times slower.
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


# Fast-math without "ninf": pixels without a feature hold inf, which must compare correctly.
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
def _first_pass_columns(cells, step, cut2, f1, l1, f2, l2, j0, j1):
    """Two-distinct-nearest along axis 0 for the columns j0..j1-1 (two sweeps)."""
    n = cells.shape[0]
    m = j1 - j0
    r1 = np.zeros(m, dtype=np.int64)
    r2 = np.zeros(m, dtype=np.int64)
    a1 = np.zeros(m, dtype=np.int32)
    a2 = np.zeros(m, dtype=np.int32)
    for i in range(n):  # downwards: nearest above (inclusive)
        for jj in range(m):
            j = j0 + jj
            lab = cells[i, j]
            if lab != 0:
                if lab != a1[jj]:
                    r2[jj] = r1[jj]
                    a2[jj] = a1[jj]
                    a1[jj] = lab
                r1[jj] = i
            if a1[jj] != 0:
                d = (i - r1[jj]) * step
                if d * d <= cut2:
                    f1[i, j] = d * d
                    l1[i, j] = a1[jj]
                    if a2[jj] != 0:
                        d = (i - r2[jj]) * step
                        if d * d <= cut2:
                            f2[i, j] = d * d
                            l2[i, j] = a2[jj]
    a1[:] = 0
    a2[:] = 0
    for i in range(n - 1, -1, -1):  # upwards: nearest below, merged in
        for jj in range(m):
            j = j0 + jj
            lab = cells[i, j]
            if lab != 0:
                if lab != a1[jj]:
                    r2[jj] = r1[jj]
                    a2[jj] = a1[jj]
                    a1[jj] = lab
                r1[jj] = i
            if a1[jj] != 0:
                d = (r1[jj] - i) * step
                if d * d <= cut2:
                    b1, c1, b2, c2 = _insert(f1[i, j], l1[i, j], f2[i, j], l2[i, j], d * d, a1[jj])
                    if a2[jj] != 0:
                        d = (r2[jj] - i) * step
                        if d * d <= cut2:
                            b1, c1, b2, c2 = _insert(b1, c1, b2, c2, d * d, a2[jj])
                    f1[i, j] = b1
                    l1[i, j] = c1
                    f2[i, j] = b2
                    l2[i, j] = c2


@_jit
def _first_pass(cells, step, cut2):
    """Two-distinct-nearest along axis 0 of ``cells`` (L, M); labels > 0 are features."""
    n, m = cells.shape
    f1 = np.full((n, m), np.inf, dtype=np.float32)
    f2 = np.full((n, m), np.inf, dtype=np.float32)
    l1 = np.zeros((n, m), dtype=np.int32)
    l2 = np.zeros((n, m), dtype=np.int32)
    _first_pass_columns(cells, step, cut2, f1, l1, f2, l2, 0, m)
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


@_jit
def _lower_envelope(r1, step, v, z):
    """Lower envelope of the parabolas (x - k·step)² + r1[k] (Felzenszwalb & Huttenlocher).

    Fills ``v`` (the parabolas' columns) and ``z`` (where each starts); returns their number.
    Columns with r1 = inf (no feature) are left out.
    """
    count = 0
    for q in range(r1.shape[0]):
        fq = r1[q]
        if fq == np.inf:
            continue
        xq = q * step
        if count == 0:
            v[0] = q
            z[0] = -np.inf
            count = 1
            continue
        while True:  # z[0] = -inf: the first parabola is never popped
            p = v[count - 1]
            xp = p * step
            s = ((fq + xq * xq) - (r1[p] + xp * xp)) / (2.0 * (xq - xp))
            if s <= z[count - 1]:
                count -= 1
            else:
                break
        v[count] = q
        z[count] = s
        count += 1
    return count


@_jit_fast
def _final_pass(f1, l1, f2, l2, step, where, cutoff, w0, inv2s2):
    """Border term w0·exp(-(d1 + d2)² / (2σ²)) along the last axis of (A, L) arrays.

    d1 and the nearest cell c1 from the lower envelope of the row's parabolas (linear time);
    d2 — the nearest feature whose label is not c1 — as the minimum over the window
    |offset| < cutoff - d1, beyond which the term is negligible anyway.
    """
    na, n = f1.shape
    out = np.zeros((na, n), dtype=np.float32)
    for a in range(na):
        r1 = f1[a]
        q1 = l1[a]
        r2 = f2[a]
        mask = where[a]
        v = np.empty(n, dtype=np.int64)
        z = np.empty(n, dtype=np.float64)
        count = _lower_envelope(r1, step, v, z)
        t = 0
        for j in range(n):
            if count == 0:
                break
            if not mask[j]:
                continue
            x = j * step
            while t + 1 < count and z[t + 1] < x:
                t += 1
            p = v[t]
            d1 = math.sqrt((x - p * step) * (x - p * step) + r1[p])
            if 2.0 * d1 >= cutoff:  # d2 >= d1: the term is negligible
                continue
            c1 = q1[p]
            m = int((cutoff - d1) / step) + 1
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
    f1, l1, f2, l2 = (x.reshape(view) for x in (f1, l1, f2, l2))
    out = _final_pass(f1, l1, f2, l2, step, where.reshape(view), cutoff, w0, inv2s2)
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
