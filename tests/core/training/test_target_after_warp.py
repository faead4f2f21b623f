"""Training targets and weights are derived from the WARPED instance labels.

Deriving the separation borders before the elastic/affine warp and resampling the target by
nearest neighbour lets warped cells touch: the network is then taught to merge cells exactly
where the border weight is highest. Here two touching cells go through many random warps and
must stay separated by background in every augmented target.

The image carries one indicator channel per cell (and one for the annotated area), so after the
warp (bilinear) a pixel whose channel k is ~1 lies deep inside cell k.
"""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from napari_unet.core.augment import AugmentConfig
from napari_unet.core.training import TrainConfig, Trainer, TrainingPair

GEOMETRIC = AugmentConfig(brightness=0.0, contrast=(1.0, 1.0), gamma=(1.0, 1.0), shift=8.0,
                          scale=(0.8, 1.25))


def _touching_pair(annotated=None):
    labels = np.zeros((64, 64), np.int32)
    labels[8:56, 6:32] = 1
    labels[8:56, 32:58] = 2  # touching along a 48-pixel contact
    image = np.stack([labels == 1, labels == 2, np.ones_like(labels, bool)
                      if annotated is None else annotated]).astype(np.float32)
    return TrainingPair(image, labels, annotated=annotated, channel_axis=0)


def _trainer(pair, num_classes=2, batch=8):
    cfg = TrainConfig(steps=1, depth=1, base_channels=2, num_classes=num_classes,
                      batch_size=batch, augment=GEOMETRIC, validate_every=0, val_fraction=0.0,
                      device="cpu", seed=3)
    return Trainer([pair], cfg)


def _output_region(trainer, img):
    m = (trainer.tile - trainer.out_tile) // 2
    return img[:, :, m : m + trainer.out_tile, m : m + trainer.out_tile]


@pytest.mark.parametrize("num_classes", [2, 3])
def test_no_augmented_cell_bridges_a_border(num_classes):
    trainer = _trainer(_touching_pair(), num_classes=num_classes)
    sampler = trainer.make_sampler()
    eight = np.ones((3, 3), bool)
    bridged = 0
    for _ in range(30):
        img, tgt, _ = trainer.training_batch(sampler)
        img = _output_region(trainer, img).numpy()
        tgt = tgt.numpy()
        for x, t in zip(img, tgt, strict=True):
            comp, n = ndi.label(t == 1, structure=eight)  # interior (3-class) / cell (2-class)
            for k in range(1, n + 1):
                inside = comp == k
                if (x[0][inside] > 0.99).any() and (x[1][inside] > 0.99).any():
                    bridged += 1
    assert bridged == 0, f"{bridged} augmented targets bridge the two cells"


def test_weights_follow_the_warped_annotation():
    annotated = np.zeros((64, 64), bool)
    annotated[:, :28] = True  # only the left part, cutting through cell 1
    trainer = _trainer(_touching_pair(annotated))
    sampler = trainer.make_sampler()
    counted = 0
    for _ in range(10):
        img, _, wts = trainer.training_batch(sampler)
        ann = _output_region(trainer, img).numpy()[:, 2]
        wts = wts.numpy()
        assert wts.dtype == np.float32 and (wts >= 0).all()
        # the nearest source pixel of a counted pixel is annotated: bilinear weight >= 1/4
        assert (wts[ann < 0.2] == 0).all()
        counted += int((wts > 0).sum())
    assert counted > 0


def test_border_weight_is_high_in_the_warped_gap():
    trainer = _trainer(_touching_pair())
    sampler = trainer.make_sampler()
    img, tgt, wts = trainer.training_batch(sampler)
    img = _output_region(trainer, img).numpy()
    # background pixels next to both warped cells (the separation gap) carry the border term
    gap = ((ndi.maximum_filter(img[:, 0], size=(1, 3, 3)) > 0.99)
           & (ndi.maximum_filter(img[:, 1], size=(1, 3, 3)) > 0.99) & (tgt.numpy() == 0) & (wts.numpy() > 0))
    assert gap.any()
    assert float(wts.numpy()[gap].min()) > 5.0
    assert isinstance(tgt, torch.Tensor) and tgt.dtype == torch.int64
