"""Is the ``napari_unet`` being run this project's? A check for both ways in: CLI and napari.

This project is installed as ``napari-cell-unet`` and imported as ``napari_unet``. An unrelated
napari plugin published as ``napari-unet`` ships an import package of the same name (its own
``napari_unet/__init__.py``, ``napari.yaml``, ``widgets/``…). pip does not check who owns a file,
so installing one over the other silently replaces the shared files, and uninstalling either
removes them from both: the two cannot live in one environment. :func:`problem` tells such an
environment apart and says how to repair it; the command line calls it before anything else, and
napari through the manifest's ``on_activate`` (:func:`activate`) when a widget or sample of this
plugin is first opened. Our manifest has a file name of its own (``napari_cell_unet.yaml``), so
the other project cannot overwrite it and this check still runs after it was installed over us.

Importing this module imports neither Qt nor torch.

Examples
--------
>>> DISTRIBUTION
'napari-cell-unet'
>>> problem() is None  # this environment holds only this project's napari_unet
True
"""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

__all__ = ["CONFLICTING", "DISTRIBUTION", "ForeignInstallationError", "activate", "check",
           "problem"]

#: The name this project is installed under (``pip install napari-cell-unet``).
DISTRIBUTION = "napari-cell-unet"

#: Distributions known to ship an import package called ``napari_unet``: the unrelated plugin
#: published as ``napari-unet`` (and this project's own name before it had one of its own).
CONFLICTING = ("napari-unet",)


class ForeignInstallationError(RuntimeError):
    """Another project's ``napari_unet`` is mixed with this one in the environment."""


def _reinstall() -> str:
    return (f"reinstall this project: pip install --force-reinstall --no-deps {DISTRIBUTION} "
            "(or the path of its wheel; pip install -e . in a checkout), with this environment's "
            f"pip ({sys.executable} -m pip)")


def _conflicting_distribution() -> tuple[str, str] | None:
    """(name, "name version ('summary')") of an installed distribution of :data:`CONFLICTING`."""
    for name in CONFLICTING:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if dist.read_text("RECORD") is None:
            # Not an installation: an installer always writes RECORD (the list of the files it
            # put down). Without one it is a build's leftover, e.g. the napari_unet.egg-info that
            # setuptools left beside the package in a checkout built before the project's rename.
            continue
        summary = (dist.metadata.get("Summary") or "").strip()
        return name, f"{name} {dist.version}" + (f" ({summary!r})" if summary else "")
    return None


def problem() -> str | None:
    """What is wrong with this environment's ``napari_unet``, with the fix; None when all is ours.

    Two signs, both cheap (no scan of every installed distribution): a distribution of
    :data:`CONFLICTING` is installed (its metadata has a RECORD of the files put down), or
    ``napari_unet/__init__.py`` lacks this project's ``__distribution__`` marker (the other
    project's, or none, replaced it).

    Returns
    -------
    str or None
        One paragraph naming the problem and the fix (``pip uninstall napari-unet``, then
        reinstall this project), or None.
    """
    import napari_unet

    here = Path(next(iter(napari_unet.__path__), "?"))  # a folder, also when __init__.py is gone
    conflicting = _conflicting_distribution()
    if conflicting is not None:
        name, described = conflicting
        return (
            f"another project is installed in this environment ({sys.prefix}): {described}. It "
            f"ships an import package called napari_unet too, so it and {DISTRIBUTION} (this "
            f"project, imported from {here}) overwrite each other's files and cannot live in one "
            f"environment. Fix: pip uninstall {name}, then {_reinstall()}; or give either "
            "project a virtual environment of its own"
        )
    if getattr(napari_unet, "__distribution__", None) != DISTRIBUTION:
        return (
            f"the napari_unet package here ({here}) is not {DISTRIBUTION}'s: its __init__.py was "
            "replaced or removed, e.g. by installing or uninstalling another project that ships "
            f"an import package of that name (napari-unet). Fix: {_reinstall()}"
        )
    return None


def check() -> None:
    """Raise :class:`ForeignInstallationError` with :func:`problem`'s message, if there is one.

    Examples
    --------
    >>> check()  # nothing to report here
    """
    message = problem()
    if message is not None:
        raise ForeignInstallationError(f"{DISTRIBUTION}: {message}")


def activate(context: object = None) -> None:
    """The manifest's ``on_activate``: napari calls it before the plugin's first widget or sample.

    npe2 reports a failed activation as "Activating plugin 'napari-cell-unet' failed: <message>";
    the widget or sample does not open, so nothing runs on a mixed installation.
    """
    check()
