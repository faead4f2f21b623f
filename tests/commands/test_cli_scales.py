"""``--scales`` on the command line: ``predict`` and ``evaluate`` average the scales a model
stores for colour images (judged before the colour becomes gray), ``--scales`` overrides,
``--scales 1`` turns it off; bad factors and block-wise prediction are refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.commands.files import read_pairs, write_image
from napari_unet.core.io import save_model
from napari_unet.core.model import UNet
from napari_unet.core.synthetic import synthetic_cells

COLOUR = ["1", "0.7", "1.4"]


@pytest.fixture
def model(tmp_path):
    net = UNet(depth=1, base_channels=4).eval()
    return save_model(net, tmp_path / "m.safetensors",
                      normalization={"method": "percentile", "low": 1.0, "high": 99.8},
                      postprocess={"min_size": 1, "tta": False,
                                   "scales": {"colour": [1.0, 0.7, 1.4]}})


@pytest.fixture
def folder(tmp_path):
    """A colour PNG, a gray image stored as RGB, and their labels."""
    img, lab = tmp_path / "img", tmp_path / "lab"
    img.mkdir()
    lab.mkdir()
    gray, labels = synthetic_cells((40, 44), radius=7, seed=0)
    w = np.clip(gray / max(gray.max(), 1e-6), 0, 1)[..., None]
    rgb = ((1 - w) * np.array([240.0, 120, 180]) + w * np.array([140.0, 150, 250]))
    write_image(img / "he.png", rgb.astype(np.uint8))
    write_image(img / "fluo.png", np.repeat((w * 200).astype(np.uint8), 3, axis=-1))
    for name in ("he", "fluo"):
        tifffile.imwrite(lab / f"{name}.tif", labels)
    return img, lab


def predicted(model, source, out, *extra):
    assert main(["predict", "--model", str(model), "--input", str(source), "--output",
                 str(out), "--device", "cpu", "--probabilities", *extra]) == 0
    return tifffile.imread(out / f"{source.stem}_probabilities.tif")


def test_predict_averages_the_stored_colour_scales_and_the_option_overrides(model, folder,
                                                                            tmp_path):
    img, _ = folder
    he = predicted(model, img / "he.png", tmp_path / "a")
    assert he.shape == (2, 40, 44)
    np.testing.assert_array_equal(he, predicted(model, img / "he.png", tmp_path / "b",
                                                "--scales", *COLOUR))
    assert not np.array_equal(he, predicted(model, img / "he.png", tmp_path / "c",
                                            "--scales", "1"))
    fluo = predicted(model, img / "fluo.png", tmp_path / "d")  # gray stored as RGB
    np.testing.assert_array_equal(fluo, predicted(model, img / "fluo.png", tmp_path / "e",
                                                  "--scales", "1"))


def test_evaluate_judges_colour_before_the_gray_conversion(model, folder, capsys):
    img, lab = folder
    rows = {r["path"].stem: r for r in read_pairs([img], [lab], gray="mean")}
    assert rows["he"]["colour"] and rows["he"]["channel_axis"] is None
    assert not rows["fluo"]["colour"]

    def scores(*extra):
        capsys.readouterr()
        assert main(["evaluate", "--model", str(model), "--images", str(img), "--labels",
                     str(lab), "--json", "--device", "cpu", *extra]) == 0
        return {r["image"].rsplit("/", 1)[-1]: r for r in
                json.loads(capsys.readouterr().out)["images"]}

    default, colour, own = scores(), scores("--scales", *COLOUR), scores("--scales", "1")
    assert default["he.png"] == colour["he.png"]
    assert default["fluo.png"] == own["fluo.png"]


@pytest.mark.parametrize("bad", [["0"], ["-1", "1"]])
def test_bad_scales_are_refused_by_name(model, folder, tmp_path, capsys, bad):
    img, lab = folder
    assert main(["predict", "--model", str(model), "--input", str(img / "he.png"),
                 "--output", str(tmp_path / "out"), "--scales", *bad]) != 0
    err = capsys.readouterr().err
    assert "--scales: expected one or more positive factors" in err and "give 1" in err
    assert not (tmp_path / "out").exists()
    assert main(["evaluate", "--model", str(model), "--images", str(img), "--labels",
                 str(lab), "--scales", *bad]) != 0
    assert "--scales" in capsys.readouterr().err


def test_block_wise_prediction_refuses_other_scales(model, tmp_path, capsys):
    import zarr

    from napari_unet.core.predict import predict_to_zarr

    source = tmp_path / "in.zarr"
    zarr.open_array(str(source), mode="w", shape=(40, 44), dtype="f4")[:] = 1.0
    assert main(["predict", "--model", str(model), "--input", str(source), "--output",
                 str(tmp_path / "out.zarr"), "--scales", "1", "0.7"]) != 0
    assert "--scales: block-wise prediction" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"scales: block-wise .*scales=\(1,\)"):
        predict_to_zarr(UNet(depth=1, base_channels=2), np.ones((40, 44)),
                        tmp_path / "o.zarr", scales=(1, 0.7))
    assert main(["predict", "--model", str(model), "--input", str(source), "--output",
                 str(tmp_path / "one.zarr"), "--scales", "1", "--device", "cpu"]) == 0
