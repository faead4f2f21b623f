"""Pure compute: numpy, scipy and torch only. Never imports Qt, magicgui or napari.

Where things live (each package's ``__init__`` is its public face; import from there)::

    core/
      model/       the U-Net and 3D U-Net, valid sizes, memory estimates
      targets/     labels → instances, what counts (sparse annotation), the per-pixel target
      weights/     the paper's weight map: class balance + border term
      augment/     elastic, affine and gray-value augmentation, in torch on the device
      training/    settings and recipes, training pairs, patches, the Trainer, validation,
                   checkpoints, several processes (torchrun)
      predict/     overlap-tile prediction, post-processing, segmentation of raw images,
                   block-wise zarr/dask prediction
      measure/     per-cell tables (regionprops_table), CSV, napari features, per-cell matching
      io/          model files (safetensors + metadata), plain PyTorch weights,
                   TorchScript / ONNX / bioimage.io export
      normalize.py intensity normalisation stored with every model
      checks.py    checks of user data shared by every entry point
      device.py    device choice, CPU threads, bfloat16 on the CPU
      metrics.py   segmentation scores (IoU, pixel and Rand error, F1, matching)
      synthetic.py synthetic touching cells (2D and 3D)

Data flows one way: targets/weights/augment → training; model → training and predict;
predict → io (exports) and training (validation). Nothing here knows about run folders, the
command line or the widgets: those are :mod:`napari_unet.engine`, :mod:`napari_unet.commands`
and :mod:`napari_unet.widgets`.

Submodules are imported on demand (``from napari_unet.core.model import UNet``) so that
importing :mod:`napari_unet.core` stays cheap.
"""
