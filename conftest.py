"""The doctests of src/ take each module as the package imports it: one module object per file.

With ``--import-mode=importlib`` pytest imports a module it collects for its doctests from the
file. Where the module's package is not imported yet, pytest imports the package first (its
``__init__`` imports the module the ordinary way) and then executes the file once more, putting
the second copy in ``sys.modules`` and on the package. Code bound to the first copy then never
sees what a test does to the second: ``pytest src/napari_unet/core/predict/blocks.py
tests/core/predict/test_blockwise.py`` failed 8 of 14 (``blockwise`` called the first copy's
``run_block``, which a test's monkeypatch of ``blocks`` did not reach, and the first copy's
``BlockSpec`` no longer pickled for a dask worker). Importing the module the ordinary way when
its file is collected leaves pytest nothing to import: it takes the module from ``sys.modules``.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

SRC = Path(__file__).resolve().parent / "src"


def pytest_collect_file(file_path: Path, parent):
    if (not parent.config.option.doctestmodules or file_path.suffix != ".py"
            or file_path.name == "__main__.py"):
        return None  # doctest collects no __main__.py: importing one would run it
    try:
        parts = file_path.resolve().relative_to(SRC).with_suffix("").parts
    except ValueError:
        return None  # not a module of src/
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    try:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin and Path(spec.origin).resolve() == file_path.resolve():
            importlib.import_module(name)  # the package's own module, before pytest's import
    except Exception:  # pytest's own import of the file reports it, at the file
        pass
    return None
