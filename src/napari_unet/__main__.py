"""``python -m napari_unet`` runs the command line (used by ``torchrun -m napari_unet``)."""

from napari_unet.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
