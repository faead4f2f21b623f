"""Colour images and one-channel models on the command line: ``train --gray RULE`` stores the
rule; ``predict`` and ``evaluate`` apply a model's stored rule to colour input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.commands.files import write_image
from napari_unet.core.io import read_metadata, save_model
from napari_unet.core.model import UNet
from napari_unet.core.normalize import to_gray
from napari_unet.core.synthetic import synthetic_cells

TINY = ["--depth", "1", "--base-channels", "4", "--device", "cpu", "--steps", "2"]


def he_image(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Purple nuclei on pink tissue on white (brightfield colours) and their labels."""
    image, labels = synthetic_cells((48, 48), radius=9, seed=seed)
    w = np.clip(image / max(image.max(), 1e-6), 0, 1)[..., None]
    rgb = (1 - w) * np.array([240.0, 120, 180]) + w * np.array([140.0, 150, 250])
    return rgb.astype(np.uint8), labels


@pytest.fixture
def mixed(tmp_path):
    """One gray fluorescence TIFF and one H&E-like PNG with their labels."""
    img, lab = tmp_path / "img", tmp_path / "lab"
    img.mkdir()
    lab.mkdir()
    gray, labels = synthetic_cells((48, 48), radius=9, seed=0)
    tifffile.imwrite(img / "fluo.tif", (gray * 1000).astype(np.uint16))
    tifffile.imwrite(lab / "fluo.tif", labels)
    rgb, labels = he_image(1)
    write_image(img / "he.png", rgb)
    tifffile.imwrite(lab / "he.tif", labels)
    return img, lab


@pytest.mark.parametrize(("flag", "rule"), [(["--gray"], "mean"), (["--gray", "auto"], "auto"),
                                            (["--gray", "stain"], "stain")])
def test_train_gray_stores_the_rule(mixed, tmp_path, flag, rule):
    img, lab = mixed
    out = tmp_path / "m.safetensors"
    assert main(["train", "--images", str(img), "--labels", str(lab), "--out", str(out),
                 *TINY, *flag]) == 0
    assert read_metadata(out)["normalization"]["colour"] == rule


def test_train_without_gray_on_mixed_channels_names_the_option(mixed, tmp_path, capsys):
    img, lab = mixed
    assert main(["train", "--images", str(img), "--labels", str(lab), "--out",
                 str(tmp_path / "m.safetensors"), *TINY]) != 0
    assert "--gray" in capsys.readouterr().err


def test_predict_and_evaluate_turn_colour_gray_by_the_models_rule(mixed, tmp_path, capsys):
    img, lab = mixed
    net = UNet(depth=1, base_channels=4).eval()
    model = save_model(net, tmp_path / "m.safetensors",
                       normalization={"method": "percentile", "low": 1.0, "high": 99.8,
                                      "colour": "stain"})
    rgb = np.asarray(__import__("imageio.v3", fromlist=["imread"]).imread(img / "he.png"))
    tifffile.imwrite(tmp_path / "he_stain.tif", to_gray(rgb, rule="stain"))
    for source, out in ((img / "he.png", "a"), (tmp_path / "he_stain.tif", "b")):
        assert main(["predict", "--model", str(model), "--input", str(source), "--output",
                     str(tmp_path / out), "--device", "cpu", "--no-tta"]) == 0
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "a" / "he_labels.tif"),
                                  tifffile.imread(tmp_path / "b" / "he_stain_labels.tif"))
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model), "--images", str(img), "--labels",
                 str(lab), "--json", "--device", "cpu"]) == 0  # a mixed folder, no --gray
    assert len(json.loads(capsys.readouterr().out)["images"]) == 2
