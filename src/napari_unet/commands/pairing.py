"""Which files go together: expanding folders, pairing images with labels (or masks) by name,
never by position, and naming outputs without collisions."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from napari_unet.cli import CLIError

__all__ = ["SUFFIXES", "expand_paths", "output_paths", "pair_paths"]

#: File suffixes read from folders.
SUFFIXES = (".tif", ".tiff", ".png")


def expand_paths(paths: Sequence[str | os.PathLike] | str | os.PathLike, *, what: str) -> list[Path]:
    """Files named by ``paths``: each entry a file or a folder (its TIFF/PNG files, sorted).

    ``what`` names the option in error messages (e.g. ``"--images"``).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    out: list[Path] = []
    for entry in paths:
        p = Path(entry)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in SUFFIXES)
            if not found:
                raise CLIError(f"{what}: folder {str(p)!r} holds no {'/'.join(SUFFIXES)} files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise CLIError(f"{what}: {str(p)!r} does not exist")
    if not out:
        raise CLIError(f"{what}: no files given")
    return out


def _key(path: Path) -> str:
    """Pairing key: the file name without suffixes (``a.ome.tif`` → ``a``)."""
    name = path.name
    while Path(name).suffix.lower() in (*SUFFIXES, ".ome"):
        name = Path(name).stem
    return name


def _loose_key(stem: str, prefix: str, suffix: str) -> str:
    """The distinguishing part of a stem: common prefix/suffix removed, numbers without
    leading zeros (``lab007`` → ``7``), lower case."""
    core = stem[len(prefix): len(stem) - len(suffix)]
    return re.sub(r"\d+", lambda m: str(int(m.group())), core).lower()


def _common_start(texts: Sequence[str]) -> str:
    first = min(texts, key=len)
    n = 0
    while n < len(first) and all(t[n] == first[n] for t in texts):
        n += 1
    return first[:n]


def _common_affixes(stems: Sequence[str]) -> tuple[str, str]:
    """Longest common prefix and suffix of ``stems``, backed off so that no digit run is cut."""
    if len(stems) < 2:
        return "", ""
    prefix = _common_start(stems)
    suffix = _common_start([s[::-1] for s in stems])[::-1]
    while prefix and prefix[-1].isdigit():
        prefix = prefix[:-1]
    while suffix and suffix[0].isdigit():
        suffix = suffix[1:]
    shortest = min(map(len, stems))
    if len(prefix) + len(suffix) > shortest:
        suffix = suffix[len(prefix) + len(suffix) - shortest:]
    return prefix, suffix


def _match(keys_a: list[str], keys_b: list[str]) -> dict[int, int] | None:
    """Index map a → b when every key of a has exactly one partner in b and vice versa."""
    where: dict[str, list[int]] = {}
    for j, k in enumerate(keys_b):
        where.setdefault(k, []).append(j)
    if len(set(keys_a)) != len(keys_a) or any(len(v) != 1 for v in where.values()):
        return None
    if set(keys_a) != set(where):
        return None
    return {i: where[k][0] for i, k in enumerate(keys_a)}


def pair_paths(
    images: Sequence[Path], others: Sequence[Path], *, what: str = "--labels"
) -> list[tuple[Path, Path]]:
    """Pair each image file with the file of ``others`` that has the same name.

    Names are compared without their suffixes (``a.ome.tif`` ↔ ``a.png``); when the two sets
    use different names for the same items, the part that differs between the files of each
    set is compared instead, numbers by value: ``img1, img2, img10`` ↔ ``lab01, lab02, lab10``
    and ``a.tif`` ↔ ``a_mask.tif``. Never by position: a file without a partner, or with two,
    gives a CLIError that names it. A single image with a single file is a pair.

    Examples
    --------
    >>> pairs = pair_paths([Path("img2.tif"), Path("img10.tif")],
    ...                    [Path("lab10.tif"), Path("lab02.tif")])
    >>> [(a.name, b.name) for a, b in pairs]
    [('img2.tif', 'lab02.tif'), ('img10.tif', 'lab10.tif')]
    """
    images, others = list(images), list(others)
    if len(images) == 1 and len(others) == 1:
        return [(images[0], others[0])]
    stems_a, stems_b = [_key(p) for p in images], [_key(p) for p in others]
    found = _match(stems_a, stems_b)
    if found is None:
        pa, pb = _common_affixes(stems_a), _common_affixes(stems_b)
        loose_a = [_loose_key(s, *pa) for s in stems_a]
        loose_b = [_loose_key(s, *pb) for s in stems_b]
        found = _match(loose_a, loose_b)
    if found is not None:
        return [(images[i], others[j]) for i, j in sorted(found.items())]
    _pairing_error(images, others, stems_a, stems_b, what)
    raise AssertionError("unreachable")  # pragma: no cover


def _pairing_error(images, others, stems_a, stems_b, what: str) -> None:
    pa, pb = _common_affixes(stems_a), _common_affixes(stems_b)
    loose_a = [_loose_key(s, *pa) for s in stems_a]
    loose_b = [_loose_key(s, *pb) for s in stems_b]
    for keys_a, keys_b in ((stems_a, stems_b), (loose_a, loose_b)):
        for i, k in enumerate(keys_a):
            partners = [others[j].name for j, kb in enumerate(keys_b) if kb == k]
            if keys_a.count(k) > 1:
                names = [images[n].name for n, ka in enumerate(keys_a) if ka == k]
                raise CLIError(
                    f"{what}: ambiguous pairing: images {', '.join(map(repr, names))} have the "
                    "same name; rename them so each name appears once"
                )
            if len(partners) > 1:
                raise CLIError(
                    f"{what}: ambiguous pairing: {', '.join(map(repr, partners))} all match "
                    f"image {images[i].name!r}; rename the files so each name appears once"
                )
    exact = set(stems_b)
    loose = set(loose_b)
    for i, image in enumerate(images):
        if stems_a[i] not in exact and loose_a[i] not in loose:
            raise CLIError(
                f"{what}: no file named like image {image.name!r} among {len(others)} file(s) "
                f"(e.g. {others[0].name!r}); give each image a partner with the same name "
                "(pairing is by name, never by position)"
            )
    for j, other in enumerate(others):
        if stems_b[j] not in set(stems_a) and loose_b[j] not in set(loose_a):
            raise CLIError(
                f"{what}: file {other.name!r} has no image of the same name among "
                f"{len(images)} image(s); remove it or give it its image"
            )
    raise CLIError(
        f"{what}: {len(others)} file(s) do not pair one-to-one by name with {len(images)} "
        "image(s); give each image a partner with the same name"
    )


def output_paths(paths: Sequence[Path], folder: Path, suffixes: Sequence[str]) -> list[dict]:
    """Output file names per input file, unique: ``<stem><suffix>`` for each suffix.

    The stem is the name without its image suffixes (``cell.1.tif`` → ``cell.1``); inputs that
    share a stem (``img.png``, ``img.tif``) keep their suffix in it (``img_png``, ``img_tif``).

    Examples
    --------
    >>> out = output_paths([Path("a/img.png"), Path("a/img.tif"), Path("a/c.1.tif")],
    ...                    Path("o"), ["_labels.tif"])
    >>> [str(o["_labels.tif"]) for o in out]
    ['o/img_png_labels.tif', 'o/img_tif_labels.tif', 'o/c.1_labels.tif']
    """
    stems = [_key(p) for p in paths]
    out, seen = [], {}
    for p, stem in zip(paths, stems, strict=True):
        if stems.count(stem) > 1:
            stem = p.name.replace(".", "_")
        if stem in seen:
            raise CLIError(
                f"--input: {p.name!r} and {seen[stem].name!r} would write the same output "
                f"{stem!r}; rename one of them"
            )
        seen[stem] = p
        out.append({sfx: folder / f"{stem}{sfx}" for sfx in suffixes})
    return out
