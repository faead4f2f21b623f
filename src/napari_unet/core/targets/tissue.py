"""Tessellated annotations: cells that fill the space, told apart from objects on a background.

In a tissue (plant cells stained at their walls, an epithelium) every pixel belongs to a cell
and the borders between cells are walls, not background. The paper's target separates touching
cells by a background border, which for a tissue shrinks every cell away from its walls and
leaves no background to learn. A tessellated annotation trains the *tissue* target instead
(:func:`napari_unet.core.targets.make_target` with ``tissue=True``: background, cell, wall) and
is segmented by a seeded watershed that gives every tissue pixel to a cell
(:mod:`napari_unet.core.predict.tissue`).

The rule (:func:`contact_share`): of the painted cells' outline pixels — cell pixels with a
known pixel of another value among their 4 (2D) or 6 (3D) face neighbours — the share whose
face neighbours hold *another cell*. Faces, as cells are read from a binary mask: two cells
that meet only at a corner do not touch (a diagonal line of one-pixel cells is no tissue). Only annotated pixels are known: the neighbours of an
annotated plane in the planes above and below it, or outside the annotated regions, are
neither cell nor background. An annotation is tessellated at a share of at least
:data:`TISSUE_CONTACT`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

__all__ = ["TARGETS", "TISSUE_CONTACT", "contact_counts", "contact_share", "recognise_target"]

#: the kinds of training target: ``"objects"`` (cells or nuclei on a background, separated by a
#: background border: the paper's) and ``"tissue"`` (cells that fill the space, walls between
#: them)
TARGETS = ("objects", "tissue")

#: an annotation is tessellated when at least this share of its cells' outline touches another
#: cell. Measured on the annotations of ``../shared/data``: the plant ovule cells 1.00 (the
#: volume, and each of 3 annotated planes); the nuclei volumes (GoNuclear, QCANet) at most 0.03
#: on any of their 3 middle planes; DSB 2018's nuclei (100 training label images) median 0.04,
#: at most 0.27; ISBI 2012's cells, separated by membranes of background, 0.
TISSUE_CONTACT = 0.5


def _pairs(shape: tuple[int, ...]) -> Iterator[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """(here, there) slices of every pixel and its face neighbour one step further along an
    axis (the relation is symmetric: one direction per axis suffices)."""
    for axis in range(len(shape)):
        offset = tuple(int(a == axis) for a in range(len(shape)))
        here = tuple(slice(max(-o, 0), n - max(o, 0)) for o, n in zip(offset, shape, strict=True))
        there = tuple(slice(max(o, 0), n - max(-o, 0)) for o, n in zip(offset, shape, strict=True))
        yield here, there


def contact_counts(labels: np.ndarray, *, annotated: np.ndarray | None = None
                   ) -> tuple[int, int]:
    """(outline pixels touching another cell, outline pixels) of the cells in ``labels``.

    Parameters
    ----------
    labels : ndarray, 2D or 3D
        Instance ids or a binary mask (:func:`napari_unet.core.targets.to_instances`).
    annotated : bool ndarray, optional
        The pixels that are known (the counted area); default all. Pixels outside it are
        neither cells nor background.

    Examples
    --------
    >>> contact_counts(np.array([[1, 1, 2, 2, 0, 3]]))
    (2, 4)
    """
    from napari_unet.core.targets.instances import as_annotated, to_instances

    inst = to_instances(labels)
    ann = as_annotated(annotated, inst.shape)
    known = np.ones(inst.shape, bool) if ann is None else ann
    touching = np.zeros(inst.shape, bool)
    outline = np.zeros(inst.shape, bool)
    for here, there in _pairs(inst.shape):
        a, b = inst[here], inst[there]
        differ = (a != b) & known[here] & known[there]
        cells = differ & (a > 0) & (b > 0)
        touching[here] |= cells
        touching[there] |= cells
        outline[here] |= differ & (a > 0)
        outline[there] |= differ & (b > 0)
    return int(np.count_nonzero(touching)), int(np.count_nonzero(outline))


def contact_share(labels: np.ndarray, *, annotated: np.ndarray | None = None) -> float:
    """The share of the cells' outline pixels that touch another cell (0 without an outline).

    Examples
    --------
    >>> tissue = np.repeat(np.repeat([[1, 2], [3, 4]], 4, axis=0), 4, axis=1)  # 4 cells, no gap
    >>> contact_share(tissue)
    1.0
    >>> nuclei = np.zeros((8, 8), int); nuclei[1:3, 1:3] = 1; nuclei[5:7, 4:7] = 2
    >>> contact_share(nuclei)
    0.0
    """
    touching, outline = contact_counts(labels, annotated=annotated)
    return touching / outline if outline else 0.0


def recognise_target(annotations: Iterable[tuple[np.ndarray, np.ndarray | None]]
                     ) -> tuple[str, float]:
    """The kind of target (``"tissue"`` or ``"objects"``) of annotations ``(labels,
    annotated)``, and their contact share pooled over all of them (:func:`contact_share`):
    tissue at :data:`TISSUE_CONTACT` or more.

    Examples
    --------
    >>> tissue = np.repeat(np.repeat([[1, 2], [3, 4]], 4, axis=0), 4, axis=1)
    >>> recognise_target([(tissue, None)])
    ('tissue', 1.0)
    """
    touching = outline = 0
    for labels, annotated in annotations:
        t, o = contact_counts(labels, annotated=annotated)
        touching, outline = touching + t, outline + o
    share = touching / outline if outline else 0.0
    return ("tissue" if share >= TISSUE_CONTACT else "objects"), share
