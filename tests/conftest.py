"""Fixtures shared by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def error_line(capsys):
    """``error_line()``: the last line the command wrote to stderr, checking that no traceback
    came with it (a CLI error is one clear line)."""

    def last() -> str:
        err = capsys.readouterr().err.strip().splitlines()
        assert "Traceback" not in "\n".join(err)
        return err[-1]

    return last


@pytest.fixture(scope="session")
def write_cell_folders():
    """``write_cell_folders(root)``: two synthetic 48 x 48 images of touching cells
    (``root/img/{0,1}.tif``, uint16) and their instance labels (``root/lab``); returns
    ``(img, lab)``, the folders that ``napari-unet train --images/--labels`` reads."""
    import numpy as np
    import tifffile

    from napari_unet.core.synthetic import synthetic_cells

    def write(root: Path) -> tuple[Path, Path]:
        img, lab = Path(root) / "img", Path(root) / "lab"
        img.mkdir(parents=True)
        lab.mkdir()
        for i in range(2):
            image, labels = synthetic_cells((48, 48), radius=9, seed=i)
            tifffile.imwrite(img / f"{i}.tif", (image * 1000).astype(np.uint16))
            tifffile.imwrite(lab / f"{i}.tif", labels)
        return img, lab

    return write
