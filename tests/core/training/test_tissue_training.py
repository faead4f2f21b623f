"""Training a tissue: the annotation recognised, the tissue target learnt, the choice of its
post-processing; and the nuclei case unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import napari_unet.core.training.choice as choice
import napari_unet.core.training.validation as validation
from napari_unet.core.augment import AugmentConfig
from napari_unet.core.model import UNet
from napari_unet.core.predict import PostprocessSettings
from napari_unet.core.synthetic import synthetic_cells, synthetic_tissue
from napari_unet.core.targets import make_target, slices_mask
from napari_unet.core.training import (
    PreparedImage,
    TrainConfig,
    Trainer,
    TrainingPair,
    ValidationRegion,
    prepare_pairs,
)


def _config(**changes) -> TrainConfig:
    base = dict(steps=2, depth=1, base_channels=2, tile=44, batch_size=1, validate_every=0,
                val_fraction=0.0, device="cpu", cpu_bf16="off", augment=AugmentConfig.none())
    return TrainConfig(**{**base, **changes})


def test_a_tissue_annotation_trains_the_tissue_target():
    image, labels = synthetic_tissue((64, 64), cell_size=12, seed=0)
    trainer = Trainer([(image, labels)], _config())
    assert trainer.target == "tissue" and trainer.config.target == "tissue"
    assert trainer.model.num_classes == 3 and trainer.config.num_classes == 3
    prepared, _, _ = trainer.prepare()
    p = prepared[0].pad
    inner = prepared[0].target[p:-p, p:-p]
    np.testing.assert_array_equal(inner, make_target(labels, num_classes=3, tissue=True)[0])
    assert [e.kind for e in trainer.run()][-1] == "done"
    meta = trainer.metadata()
    assert meta["target"] == "tissue" and meta["training"]["target"] == "tissue"
    assert meta["class_names"] == ["background", "cell", "wall"]
    assert PostprocessSettings.from_metadata(meta).tissue  # predict fills the space


def test_the_validations_of_a_tissue_fill_the_space_and_the_choice_can_keep_it(monkeypatch):
    seen = []
    real = validation.region_scores

    def region_scores(rows, settings):
        seen.append(settings.tissue)
        return real(rows, settings)

    monkeypatch.setattr(validation, "region_scores", region_scores)
    monkeypatch.setattr(choice, "region_scores", region_scores)
    image, labels = synthetic_tissue((64, 64), cell_size=12, seed=1)
    trainer = Trainer([(image, labels)], _config(validate_every=1, val_fraction=0.25))
    list(trainer.run())
    assert trainer.validation.settings.tissue
    assert "tissue" in trainer.metadata()["postprocess"]
    assert seen[0] is True and True in seen and False in seen  # both kinds were tried


def test_a_volume_annotated_on_planes_is_recognised_as_tissue():
    volume, labels = synthetic_tissue((14, 32, 32), cell_size=10, seed=2)
    mask = slices_mask(labels.shape, z=(3, 7, 10))
    pair = TrainingPair(volume, np.where(mask, labels, 0), annotated=mask, ndim=3)
    trainer = Trainer([pair], _config(ndim=3, spacing=(4.0, 1.0, 1.0), tile=(14, 20, 20),
                                      pretrain_2d=0.0))
    assert trainer.target == "tissue"
    prepared, _, _ = trainer.prepare()
    p = prepared[0].pad
    for z in (3, 7, 10):  # the planes' cells are cell and wall, not all border
        plane = prepared[0].target[z + p, p:-p, p:-p]
        assert 0.3 < (plane == 1).mean() < 0.9 and (plane == 2).any()


def test_nuclei_train_as_before_bit_for_bit():
    """A nuclei annotation is recognised as objects, and everything training computes from
    it — targets, weight maps, a training batch — is what the functions compute without the
    tissue option (the code path every caller took before it existed)."""
    image, labels = synthetic_cells((64, 64), radius=8, seed=3)
    pair = TrainingPair(image, labels, sparse=True)
    trainers = {t: Trainer([pair], _config(target=t, seed=5)) for t in ("auto", "objects")}
    assert trainers["auto"].target == "objects" and trainers["auto"].model.num_classes == 2
    direct = prepare_pairs([pair], pad=trainers["auto"].tile_shape[0] // 2 + 1,
                           cover=trainers["auto"].tile_shape,
                           normalization=trainers["auto"].normalization)[0]
    batches = {}
    for t, trainer in trainers.items():
        prep = trainer.prepare()[0][0]
        for name in ("image", "target", "weights", "instances", "class_weight"):
            np.testing.assert_array_equal(getattr(prep, name), getattr(direct, name))
        batches[t] = trainer.training_batch(trainer.make_sampler())
    for a, b in zip(batches["auto"], batches["objects"], strict=True):
        assert torch.equal(a, b)
    assert trainers["auto"].metadata()["target"] == "objects"


def test_the_user_decides_the_target():
    image, labels = synthetic_tissue((64, 64), cell_size=12, seed=4)
    assert Trainer([(image, labels)], _config(target="objects")).model.num_classes == 2
    nuclei = synthetic_cells((64, 64), radius=8, seed=4)
    trainer = Trainer([nuclei], _config(target="tissue"))
    assert trainer.target == "tissue" and trainer.model.num_classes == 3
    with pytest.raises(ValueError, match="target: expected one of auto, objects, tissue"):
        _config(target="cells")


def test_a_continued_model_keeps_its_kind():
    image, labels = synthetic_cells((64, 64), radius=8, seed=6)
    model = UNet(num_classes=3, depth=1, base_channels=2)
    trainer = Trainer([(image, labels)], _config(), init_model=(model, {"target": "tissue"}))
    assert trainer.target == "tissue"
    two = UNet(num_classes=2, depth=1, base_channels=2)
    with pytest.raises(ValueError, match="target: the tissue target needs a model of 3"):
        Trainer([(image, labels)], _config(target="tissue"), init_model=(two, {}))


def _tissue_rows(monkeypatch, labels, prob):
    """choose_postprocess's input with patched probabilities, over the whole image."""
    pad = 2
    padded = tuple(n + 2 * pad for n in labels.shape)
    prep = PreparedImage(np.zeros((1, *padded), np.float32), np.zeros(padded, np.uint8),
                         np.ones(padded, np.float32), pad, labels.shape, labels,
                         np.ones(labels.shape, bool))
    monkeypatch.setattr(validation, "region_probabilities",
                        lambda model, prep, region, *, tile, tta=False: prob[(slice(None),
                                                                            *region)])
    region = tuple(slice(0, n) for n in labels.shape)
    return [prep], [ValidationRegion(0, region, np.ones(labels.shape, np.float32))]


def test_the_choice_selects_the_tissue_watershed_and_its_seed_level(monkeypatch):
    """A grid of square cells, one wall faint (its interior probability 0.62): seeds above
    0.7 keep the two cells apart; every pixel goes to a cell."""
    labels = np.repeat(np.repeat(np.arange(1, 17).reshape(4, 4), 16, 0), 16, 1).astype(np.int32)
    target, _ = make_target(labels, num_classes=3, tissue=True)
    prob = np.stack([target == k for k in range(3)]).astype(np.float32) * 0.9 + 0.1 / 3
    prob[:, :16, 15:17] = np.array([0.02, 0.62, 0.36])[:, None, None]  # the faint wall
    prepared, regions = _tissue_rows(monkeypatch, labels, prob)
    chosen = choice.choose_postprocess(torch.nn.Identity(), prepared, regions, tile=44,
                                       tissue=True)
    assert chosen["tissue"] is True and chosen["seeds"] >= 0.7
    assert chosen["chosen_on"]["instance_f1"] == pytest.approx(1.0)
    cells = PostprocessSettings.from_metadata({"postprocess": chosen}).labels(prob)
    assert (cells > 0).all() and cells.max() == 16


def test_objects_models_never_try_the_tissue_watershed(monkeypatch):
    tried = []
    real = choice.region_scores
    monkeypatch.setattr(choice, "region_scores",
                        lambda rows, s: tried.append(s.tissue) or real(rows, s))
    _, labels = synthetic_cells((48, 48), radius=7, seed=7)
    cell = make_target(labels)[0].astype(np.float32)
    prob = np.stack([1 - cell, cell]) * 0.9 + 0.05
    prepared, regions = _tissue_rows(monkeypatch, labels, prob)
    chosen = choice.choose_postprocess(torch.nn.Identity(), prepared, regions, tile=44)
    assert chosen["tissue"] is False and tried and not any(tried)


def test_the_choice_of_a_tissue_costs_its_search():
    model = UNet(depth=1, base_channels=2)
    passes, scorings = choice.choice_cost(model)
    extra = len(choice.TISSUE_SEEDS) + len(choice.THRESHOLDS) + len(choice.MIN_SIZES) - 2
    assert choice.choice_cost(model, tissue=True) == (passes, scorings + extra)
