"""3D training from (sparse) annotated slices on the one training engine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_unet.core.augment import AugmentConfig, augment_batch
from napari_unet.core.model import check_memory, estimate_training_bytes
from napari_unet.core.synthetic import synthetic_cells_3d
from napari_unet.core.targets import slices_mask
from napari_unet.core.training import (
    PatchSampler,
    TrainConfig,
    Trainer,
    TrainingPair,
    gui_defaults_3d,
    prepare_pairs,
    split_validation,
)
from napari_unet.core.weights import border_weight_map

# a tiny 3D U-Net: depth 1, pooling 1x2x2 (z step 4x the xy pixel), input 14x20x20 -> 2x4x4
SPACING = (4.0, 1.0, 1.0)
TILE = (14, 20, 20)


def _config(**changes) -> TrainConfig:
    base = dict(ndim=3, spacing=SPACING, steps=3, depth=1, base_channels=2, tile=TILE,
                batch_size=2, lr=1e-2, dropout=0.0, validate_every=0, val_fraction=0.0,
                device="cpu", cpu_bf16="off", augment=AugmentConfig.none())
    return TrainConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def volume():
    return synthetic_cells_3d((16, 28, 28), radius=5, seed=3)


def test_training_pair_3d_shapes_and_errors(volume):
    vol, lab = volume
    pair = TrainingPair(vol, lab, ndim=3, spacing=SPACING)
    assert pair.shape == (16, 28, 28) and pair.channels == 1 and pair.spacing == SPACING
    two = TrainingPair(np.stack([vol, vol], -1), lab, channel_axis=-1, ndim=3)
    assert two.shape == (16, 28, 28) and two.channels == 2
    with pytest.raises(ValueError, match="ndim=3"):  # a volume without ndim: the fix is named
        TrainingPair(vol, lab)
    with pytest.raises(ValueError, match="ndim=2"):
        TrainingPair(vol[0], lab[0], ndim=3)
    with pytest.raises(ValueError, match="annotated: expected the image's spatial shape"):
        TrainingPair(vol, lab, np.ones((16, 28), bool), ndim=3)
    with pytest.raises(ValueError, match="spacing"):
        TrainingPair(vol, lab, ndim=3, spacing=(1.0, 1.0))


def test_prepared_volume_and_patches_centred_on_weighted_voxels(volume):
    vol, lab = volume
    ann = slices_mask(vol.shape, z=(4, 11))
    (prep,) = prepare_pairs([TrainingPair(vol, lab, ann, ndim=3)], pad=11, cover=TILE,
                            spacing=SPACING)
    p = prep.pad
    assert prep.image.shape == (1, 16 + 2 * p, 28 + 2 * p, 28 + 2 * p)
    inner = prep.weights[p:-p, p:-p, p:-p]
    # only the annotated planes count: weight 0 on every other plane, > 0 on both slices
    assert np.all(inner[~ann] == 0) and inner[4].min() > 0 and inner[11].min() > 0
    sampler = PatchSampler([prep], tile=TILE, rng=np.random.default_rng(0))
    img, inst, counted, _ = sampler.sample_instances(6)
    assert img.shape == (6, 1, *TILE) and inst.shape == counted.shape == (6, *TILE)
    centre = tuple(t // 2 for t in TILE)
    assert np.all(counted[(slice(None), *centre)] == 1)  # every patch centred on a counted voxel
    _, tgt, wts = sampler.sample(3)
    assert tgt.shape == wts.shape == (3, *TILE)


def test_border_weights_are_anisotropic_with_spacing(volume):
    vol, lab = volume
    (iso,) = prepare_pairs([TrainingPair(vol, lab, ndim=3)], pad=2)
    (aniso,) = prepare_pairs([TrainingPair(vol, lab, ndim=3)], pad=2, spacing=SPACING)
    expected = border_weight_map(lab, spacing=SPACING)
    np.testing.assert_allclose(aniso.weights[2:-2, 2:-2, 2:-2], expected, rtol=1e-6)
    assert not np.allclose(iso.weights, aniso.weights)


def test_split_validation_holds_out_part_of_every_annotated_slice():
    shape = (80, 48, 48)  # z is the longest axis of the annotated box
    labels = np.zeros(shape, np.int32)
    labels[:, 10:20, 10:20], labels[:, 30:40, 25:35] = 1, 2
    ann = slices_mask(shape, z=(10, 40, 70))
    (prep,) = prepare_pairs([TrainingPair(np.random.default_rng(0).random(shape), labels, ann,
                                          ndim=3)], pad=1)
    (reg,) = split_validation([prep], fraction=0.25)
    zs, ys, xs = reg.region
    # a band along x (or y), all annotated planes inside: not whole z planes
    assert (zs.start, zs.stop) == (10, 71)
    assert ys == slice(0, 48) and xs.start > 0
    held = prep.annotated[reg.region]
    for z in (10, 40, 70):
        assert held[z - 10].all()
    p = prep.pad
    assert np.all(prep.weights[p:-p, p:-p, p:-p][reg.region] == 0)
    assert prep.weights[p + 10, p:-p, p : p + xs.start].max() > 0  # the rest of each slice trains


def _losses_and_weights(pair, steps=3):
    trainer = Trainer([pair], _config(steps=steps))
    losses = [e.loss for e in trainer.run() if e.kind == "step"]
    return losses, {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_sparse_slice_ignore_mask_reaches_the_loss(volume):
    """Labels outside the annotated slices change nothing: the loss and the weights after
    training are bit for bit the same; a change inside a slice changes the loss."""
    vol, lab = volume
    ann = slices_mask(vol.shape, z=(5, 10))
    other = lab.copy()
    outside = ~ann
    other[outside] = np.random.default_rng(1).integers(0, 50, outside.sum())  # garbage there
    loss_a, w_a = _losses_and_weights(TrainingPair(vol, lab, ann, ndim=3))
    loss_b, w_b = _losses_and_weights(TrainingPair(vol, other, ann, ndim=3))
    assert loss_a == loss_b
    assert all(torch.equal(w_a[k], w_b[k]) for k in w_a)
    inside = lab.copy()
    inside[5] = 0  # one annotated slice emptied: the loss must see it
    loss_c, _ = _losses_and_weights(TrainingPair(vol, inside, ann, ndim=3))
    assert loss_c != loss_a


def test_sparse_band_rule_in_3d(volume):
    vol, lab = volume
    painted = np.where(np.isin(lab, np.unique(lab[lab > 0])[:2]), lab, 0)
    (prep,) = prepare_pairs([TrainingPair(vol, painted, sparse=True, ndim=3)], pad=1)
    counted = prep.weights[1:-1, 1:-1, 1:-1] > 0
    assert counted[painted > 0].all() and not counted.all()


def test_tiny_3d_model_trains_and_reloads(volume, tmp_path):
    from napari_unet.core.io import load_model

    vol, lab = volume
    cfg = _config(steps=40, lr=2e-2, norm="batch", checkpoint_dir=tmp_path / "ck")
    trainer = Trainer([TrainingPair(vol, lab, ndim=3)], cfg)
    assert trainer.tile == TILE and trainer.out_tile == (2, 4, 4)
    losses = [e.loss for e in trainer.run() if e.kind == "step"]
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:5])
    path = trainer.save(tmp_path / "m.safetensors")
    model, meta = load_model(path)
    assert model.ndim == 3 and model.pool_factors == ((1, 2, 2),)
    assert model.config["norm"] == "batch"
    assert meta["training"]["ndim"] == 3 and meta["training"]["spacing"] == list(SPACING)
    assert meta["training"]["tile"] == list(TILE)
    x = torch.from_numpy(np.ascontiguousarray(vol[None, None, :14, :20, :20], np.float32))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), trainer.snapshot()[0](x))


def test_trainer_refuses_mismatched_ndim(volume):
    vol, lab = volume
    with pytest.raises(ValueError, match=r"config.ndim is 2.*TrainConfig\(ndim=3\)"):
        Trainer([TrainingPair(vol, lab, ndim=3)], _config(ndim=2, spacing=None, tile=None))


def test_augment_3d_flips_and_rotates_in_xy_only():
    ramp = torch.arange(8.0).view(1, 1, 8, 1, 1).expand(6, 1, 8, 9, 9).contiguous()
    labels = torch.zeros(6, 8, 9, 9, dtype=torch.int64)
    cfg = AugmentConfig.none(flip=True, rotate=True)
    out, _ = augment_batch(ramp, labels, config=cfg, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, ramp)  # z never flipped nor mixed with x or y
    xramp = torch.arange(9.0).view(1, 1, 1, 1, 9).expand(6, 1, 8, 9, 9).contiguous()
    out, _ = augment_batch(xramp, labels, config=cfg, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(out, xramp)  # while x is rotated / flipped


def test_augment_3d_elastic_is_isotropic_in_space():
    """With the voxel size the z displacement shrinks: a z step 10^6 x the xy pixel leaves
    every voxel in its plane (a z ramp, constant in xy, comes out unchanged)."""
    ramp = torch.arange(10.0).view(1, 1, 10, 1, 1).expand(4, 1, 10, 16, 16).contiguous()
    labels = torch.zeros(4, 10, 16, 16, dtype=torch.int64)
    cfg = AugmentConfig.none(elastic_sigma=3.0, shift=2.0)
    iso, _ = augment_batch(ramp, labels, config=cfg, generator=torch.Generator().manual_seed(1))
    flat, _ = augment_batch(ramp, labels, config=cfg, generator=torch.Generator().manual_seed(1),
                            spacing=(1e6, 1.0, 1.0))
    assert (iso - ramp).abs().max() > 0.5  # isotropic voxels: z moves
    torch.testing.assert_close(flat, ramp, atol=1e-4, rtol=0)


def test_memory_3d_per_axis_tile_and_refusal(monkeypatch):
    arch = dict(in_channels=1, num_classes=2, depth=3, base_channels=8, ndim=3)
    aniso = ((1, 2, 2), (2, 2, 2), (2, 2, 2))
    flat = estimate_training_bytes(tile=(60, 124, 124), batch_size=1, pool=aniso, **arch)
    cube = estimate_training_bytes(tile=124, batch_size=1, **arch)
    assert 0 < flat < cube
    monkeypatch.setenv("NAPARI_UNET_MEMORY_LIMIT", "200M")
    with pytest.raises(ValueError, match=r"3D U-Net.*60x252x252 voxels.*use a tile of"):
        check_memory(tile=(60, 252, 252), batch_size=1, pool=aniso, **arch)


def test_3d_recipe_and_config():
    cfg = gui_defaults_3d("cpu", spacing=(5, 1, 1))
    assert (cfg.ndim, cfg.depth, cfg.norm) == (3, 3, "batch") and 8 <= cfg.base_channels <= 16
    assert TrainConfig(ndim=3, tile=[14, 20, 20]).tile == (14, 20, 20)
    with pytest.raises(ValueError, match="tile"):
        TrainConfig(ndim=3, tile=(14, 20))
    with pytest.raises(ValueError, match="spacing"):
        TrainConfig(ndim=3, spacing=(1.0, 1.0))


def test_validation_region_probabilities_3d(volume):
    """3D validation through the tiler's N-D ``iter_predict_region``."""
    from napari_unet.core.model import UNet
    from napari_unet.core.training.validation import region_probabilities

    vol, lab = volume
    (prep,) = prepare_pairs([TrainingPair(vol, lab, ndim=3)], pad=11)
    model = UNet(1, 2, depth=1, base_channels=2, ndim=3, pool=((1, 2, 2),)).eval()
    region = (slice(3, 16), slice(5, 28), slice(0, 28))
    prob = region_probabilities(model, prep, region, tile=TILE)
    assert prob.shape == (2, 13, 23, 28)
    np.testing.assert_allclose(prob.sum(0), 1.0, rtol=1e-5)


@pytest.mark.parametrize("time_limit", [None, 600.0])
def test_3d_training_validates_and_chooses_postprocess_on_annotated_slices(volume, time_limit):
    """Validation in 3D runs through the tiler and the 3D post-processing, scored on the
    annotated planes of the held-out band; the post-processing chosen is stored. With a time
    budget a validation is first timed on one band (in 3D too)."""
    vol, lab = volume
    ann = slices_mask(vol.shape, z=(3, 8, 13))
    trainer = Trainer([TrainingPair(vol, lab, ann, ndim=3)],
                      _config(steps=2, validate_every=2, val_fraction=0.2,
                              time_limit=time_limit))
    run = trainer.run()
    events = [next(run)]
    assert events[0].kind == "step" and bool(trainer.validation.timings) == (time_limit is not None)
    events += list(run)
    (val,) = [e for e in events if e.kind == "validation"]
    assert set(val.metrics) == {"loss", "iou", "pixel_error", "rand_error", "instance_f1"}
    assert all(np.isfinite(v) for v in val.metrics.values())
    chosen = trainer.snapshot()[1]["postprocess"]
    assert chosen["chosen_on"]
    assert chosen["seeds"] == 0.0  # confident cores only for 2D models (measured there)


def test_metrics_of_binary_volumes_are_face_connected():
    from napari_unet.core.metrics import instance_f1, rand_error

    gt = np.zeros((4, 6, 6), np.uint8)
    gt[0:2, 0:2, 0:2] = gt[2:4, 3:6, 3:6] = 1  # two separate blocks, one binary value
    assert instance_f1(gt, gt) == 1.0 and rand_error(gt, gt) == 0.0
    assert instance_f1(np.where(np.arange(4)[:, None, None] < 2, gt, 0), gt) < 1.0


def test_pretraining_in_2d_on_the_annotated_slices_starts_the_3d_unet(volume, monkeypatch):
    import napari_unet.core.training.pretrain as pretrain

    vol, lab = volume
    mask = slices_mask(lab.shape, z=[4, 11])
    pair = TrainingPair(vol, np.where(mask, lab, 0), annotated=mask, ndim=3, spacing=SPACING)
    seen = {}
    real = pretrain.inflate_to_3d

    def spy(model2d, **kw):
        seen["model2d"] = model2d
        seen["planes"] = trainer.pretrain_planes
        return real(model2d, **kw)

    monkeypatch.setattr(pretrain, "inflate_to_3d", spy)
    trainer = Trainer([pair], _config(steps=4, pretrain_2d=0.5))
    events = []
    for ev in trainer.run():
        events.append(ev)
        if ev.kind == "step" and ev.step == 0 and len(events) == 2:
            trainer.request_stop()  # a Stop during the 2D phase keeps the (inflated) model
    pre = [e for e in events if e.kind == "step" and e.step == 0]
    assert pre and all("2D pre-training" in e.message and e.loss > 0 for e in pre)
    assert events[-1].kind == "stopped" and trainer.step == 0
    assert seen["model2d"].ndim == 2 and seen["planes"] == [4, 11]  # the annotated planes only
    expected = real(seen["model2d"], pool=trainer.model.pool_factors).state_dict()
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, expected[name])
    # to the end: 4 2D steps (the budget is steps here), then the 3D steps
    trainer = Trainer([pair], _config(steps=4, pretrain_2d=0.5))
    kinds = [(e.kind, e.step) for e in trainer.run()]
    assert kinds.count(("step", 0)) == 4 and ("step", 4) in kinds and kinds[-1][0] == "done"
    assert trainer.history[0]["pretrain_2d_steps"] == 4
    with pytest.raises(ValueError, match="pretrain_2d"):
        _config(pretrain_2d=1.0)


def test_3d_model_of_objects_stores_a_minimum_size_from_its_cells(volume):
    """Fragments between annotated planes are dropped by size: a 3D model stores a minimum
    size of a tenth of its annotated cells' estimated volume (no validation: no choice made),
    in voxels, with the estimate; prediction uses it by default."""
    from napari_unet.core.predict.postprocess import PostprocessSettings
    from napari_unet.core.training.cell_size import MIN_SIZE_FRACTION, typical_cell_voxels

    vol, lab = volume
    ann = slices_mask(vol.shape, z=(3, 8, 13))
    trainer = Trainer([TrainingPair(vol, lab, ann, ndim=3, spacing=SPACING)], _config(steps=2))
    list(trainer.run())
    meta = trainer.snapshot()[1]
    planes = np.where(ann, lab, 0)
    voxels = typical_cell_voxels([planes], spacing=SPACING)
    assert meta["postprocess"]["cell_voxels"] == round(voxels)
    expected = round(MIN_SIZE_FRACTION * voxels)
    assert expected > PostprocessSettings().min_size  # the default would keep fragments
    assert PostprocessSettings.from_metadata(meta).min_size == expected
