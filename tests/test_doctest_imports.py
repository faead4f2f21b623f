"""The doctests of src/ run on the modules the package imports: one module object per file,
whichever file pytest collects first (the root conftest.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_module_collected_first_for_its_doctests_is_the_one_the_package_uses():
    """``blocks.py`` collected before its package was imported: the test that monkeypatches
    ``blocks`` still reaches the code ``blockwise`` runs."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
         # the test file, not a test's id: pytest imports a file named by a test's id while
         # reading the arguments, and so the package, before it collects blocks.py
         "src/napari_unet/core/predict/blocks.py", "tests/core/predict/test_blockwise.py",
         "-k", "blocks.py or normalise"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout[-2000:]
