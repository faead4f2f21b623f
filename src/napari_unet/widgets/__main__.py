"""``python -m napari_unet.widgets [--sample NAME]``: napari with sample data and the four
widgets docked (what ``napari-unet demo --gui`` starts, so that the command line never imports
Qt)."""

from __future__ import annotations

import argparse

from napari_unet.widgets import launch_demo_viewer


def main(argv=None) -> int:
    """Parse ``argv`` and open the viewer; blocks until the window is closed."""
    parser = argparse.ArgumentParser(prog="python -m napari_unet.widgets", description=__doc__)
    parser.add_argument("--sample", choices=("touching_cells", "nuclei"),
                        default="touching_cells", help="the sample data to open")
    launch_demo_viewer(sample=parser.parse_args(argv).sample, show=True, run=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
