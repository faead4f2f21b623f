"""Bad input never gives a silent wrong result: one table of cases against the command line.

Each row runs one command on prepared files and asserts its exit status, the one-line error
(``napari-unet <command>: error: ...``) and that no file that existed before changed (sha256
before and after): a refused command writes nothing over earlier results.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.cli import main
from napari_unet.core.io import save_model
from napari_unet.core.model import UNet, valid_input_shape
from napari_unet.core.synthetic import synthetic_cells

TINY = ["--depth", "1", "--base-channels", "4", "--device", "cpu"]


def _model_variant(src: Path, dst: Path, tensors=None, metadata=None) -> None:
    """A copy of the model file ``src`` with its tensors and/or metadata strings changed."""
    import json
    import struct

    from safetensors.torch import load_file, save_file

    with open(src, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        meta = json.loads(fh.read(n))["__metadata__"]
    state = load_file(str(src))
    save_file(tensors(state) if tensors else state, str(dst),
              metadata=metadata(dict(meta)) if metadata else meta)


def _broken_models(root: Path) -> None:
    """Model files with the right architecture that compute garbage, and broken metadata."""
    import json

    from safetensors.torch import load_file

    good = root / "model.safetensors"

    def nan(state):
        state["head.weight"][0, 0, 0, 0] = float("nan")
        return state

    def inf(state):
        state["down.0.0.weight"][0, 0, 0, 0] = float("inf")
        return state

    _model_variant(good, root / "nan.safetensors", nan)
    torch.save(nan(load_file(str(good))), root / "nan.pt")  # plain PyTorch weights
    _model_variant(good, root / "inf.safetensors", inf)
    _model_variant(good, root / "huge.safetensors", lambda st: {k: v * 1e30 for k, v in st.items()})
    _model_variant(good, root / "int.safetensors", lambda st: {k: v.to(torch.int64) for k, v in
                                                               st.items()})
    _model_variant(good, root / "zeros.safetensors", lambda st: {k: torch.zeros_like(v) for k, v
                                                                 in st.items()})
    _model_variant(good, root / "badjson.safetensors",
                   metadata=lambda m: {**m, "architecture": m["architecture"][:-3]})
    _model_variant(good, root / "badnorm.safetensors",
                   metadata=lambda m: {**m, "normalization": json.dumps([1, 2])})
    _model_variant(good, root / "badthreshold.safetensors",
                   metadata=lambda m: {**m, "postprocess": json.dumps({"threshold": 2})})


def _run_folders(root: Path) -> None:
    """A run folder whose settings.json is broken, and one whose data file changed."""
    from napari_unet.core.training.data import TrainingPair
    from napari_unet.engine.runs import write_run

    image, labels = synthetic_cells((48, 48), radius=9, seed=0)
    pairs = [TrainingPair(image, labels)]
    settings = {"steps": 1, "depth": 1, "base_channels": 4, "device": "cpu"}
    write_run(root / "run_badsettings", pairs, settings=settings, seed=0)
    (root / "run_badsettings" / "settings.json").write_text('{"steps": 1, "depth": ')
    write_run(root / "run_changed", pairs, settings=settings, seed=0)
    changed = next((root / "run_changed" / "data").glob("*_labels.tif"))
    tifffile.imwrite(changed, np.zeros((48, 48), np.int32))


def _write_crafted_model(path: Path) -> None:
    """A tiny safetensors file (816 bytes) that declares depth 12 / base 4096: a network no
    machine can hold."""
    import json

    from safetensors.torch import save_file

    arch = {"in_channels": 1, "num_classes": 2, "depth": 12, "base_channels": 4096,
            "padding": "valid", "dropout": 0.5}
    save_file({"head.weight": torch.zeros(2, 4, 1, 1)}, str(path),
              metadata={"architecture": json.dumps(arch)})


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """Files every case starts from (copied per case): images, labels, a model, earlier
    results, an earlier trained model with its checkpoints, and files of each bad kind."""
    root = tmp_path_factory.mktemp("world")
    for d in ("img", "lab", "nan", "zero_lab", "tiny_img", "tiny_lab", "stack3", "stack4",
              "stack5", "ambig_lab", "results"):
        (root / d).mkdir()
    for i in range(2):
        image, labels = synthetic_cells((48, 48), radius=9, seed=i)
        tifffile.imwrite(root / "img" / f"{i}.tif", (image * 1000).astype(np.uint16))
        tifffile.imwrite(root / "lab" / f"{i}.tif", labels)
        tifffile.imwrite(root / "zero_lab" / f"{i}.tif", np.zeros_like(labels))
        nan = image.astype(np.float32)
        if i == 1:
            nan[3, 4] = np.nan
        tifffile.imwrite(root / "nan" / f"{i}.tif", nan)
        tifffile.imwrite(root / "tiny_img" / f"{i}.tif", np.ones((1, 1), np.uint16))
        tifffile.imwrite(root / "tiny_lab" / f"{i}.tif", np.ones((1, 1), np.int32))
        planes = (np.stack([image, image / 2, image / 4]) * 200).astype(np.uint8)  # (3, H, W)
        tifffile.imwrite(root / "stack3" / f"{i}.tif", planes)
        tifffile.imwrite(root / "stack4" / f"{i}.tif", np.concatenate([planes, planes[:1]]))
        tifffile.imwrite(root / "stack5" / f"{i}.tif", np.concatenate([planes, planes[:2]]))
        tifffile.imwrite(root / "ambig_lab" / f"{i}.tif", labels)
    tifffile.imwrite(root / "ambig_lab" / "0.png.tif", np.zeros((48, 48), np.int32))
    tifffile.imwrite(root / "empty.tif", np.zeros((0, 0), np.uint8))
    torch.manual_seed(0)
    save_model(UNet(depth=1, base_channels=4).eval(), root / "model.safetensors")
    save_model(UNet(depth=2, base_channels=4).eval(), root / "old.safetensors")
    (root / "old.checkpoints").mkdir()
    save_model(UNet(depth=2, base_channels=4).eval(), root / "old.checkpoints" / "last.safetensors")
    tifffile.imwrite(root / "results" / "0_labels.tif", np.ones((48, 48), np.int32))
    _write_crafted_model(root / "crafted.safetensors")
    _broken_models(root)
    _run_folders(root)
    (root / "text.png").write_text("not an image\n")
    big = synthetic_cells((1200, 1200), radius=9, seed=0)[0]
    tifffile.imwrite(root / "big.tif", (big * 1000).astype(np.uint16))
    _checkpoints(root)
    return root


def _checkpoints(root: Path) -> None:
    """A run of 2 steps with its checkpoints (run1), another image (img_b), a checkpoint with
    a changed byte (bad) and a checkpoint folder with weights but no state (orphan)."""
    main(["train", "--images", str(root / "img"), "--labels", str(root / "lab"), "--out",
          str(root / "run1.safetensors"), "--steps", "2", *TINY])
    (root / "img_b").mkdir()
    for i, path in enumerate(sorted((root / "img").iterdir())):
        tifffile.imwrite(root / "img_b" / path.name, np.flip(tifffile.imread(path), i))
    shutil.copytree(root / "run1.checkpoints", root / "bad.checkpoints")
    state = root / "bad.checkpoints" / "last.state.safetensors"
    raw = bytearray(state.read_bytes())
    raw[-3] ^= 0xFF  # a flipped byte in the weights
    state.write_bytes(bytes(raw))
    (root / "orphan.checkpoints").mkdir()
    shutil.copy(root / "run1.checkpoints" / "last.safetensors", root / "orphan.checkpoints")


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _train(images="img", labels="lab", *extra, out="new.safetensors"):
    return ["train", "--images", images, "--labels", labels, "--out", out, "--steps", "1",
            *TINY, *extra]


def _predict(inp="img", out="pred", *extra, model="model.safetensors"):
    return ["predict", "--model", model, "--input", inp, "--output", out, "--device", "cpu",
            *extra]


_BIG_TILE = str(valid_input_shape(100_000, 1)[0])

#: (case, argv with paths relative to the case folder, exit status, text in the error line
#: [, environment variables])
CASES = [
    # NaN / inf pixels: refused with the count and the first position, everywhere
    ("nan-train", _train("nan"), 2, "1 NaN/inf pixel(s) (the first at (3, 4))"),
    ("nan-predict", _predict("nan"), 2, "1 NaN/inf pixel(s) (the first at (3, 4))"),
    ("nan-evaluate", ["evaluate", "--model", "model.safetensors", "--images", "nan",
                      "--labels", "lab", "--device", "cpu"], 2, "NaN/inf pixel(s)"),
    # pairing by name: a missing partner or two candidates are errors, never by position
    ("pair-missing", _train("img", "lab/0.tif"), 2, "no file named like image '1.tif'"),
    ("pair-ambiguous", _train("img", "ambig_lab"), 2, "ambiguous pairing"),
    # never overwrite without --force
    ("predict-into-results", _predict("img", "results"), 2,
     "exists (1 of the outputs do); earlier results are not replaced"),
    ("output-is-input", _predict("img", "img"), 2, "is the input folder"),
    ("train-out-exists", _train(out="old.safetensors"), 2, "exists and would be replaced"),
    ("train-checkpoints-exist", _train("img", "lab", "--checkpoint-dir", "old.checkpoints"), 2,
     "holds the checkpoints of an earlier run"),
    # bounds: memory estimated before anything is allocated
    ("train-depth-12", ["train", "--images", "img", "--labels", "lab", "--out", "n.safetensors",
                        "--depth", "12", "--device", "cpu", "--steps", "1"], 2,
     "memory: training a U-Net of depth 12"),
    ("train-tile-100000", _train("img", "lab", "--tile", _BIG_TILE), 2, "use a tile of"),
    ("predict-tile-100000", _predict("img", "pred", "--tile", _BIG_TILE), 2,
     "--tile, --batch-size: predicting with a U-Net"),
    ("crafted-model", _predict(model="crafted.safetensors"), 2,
     "the weights do not match the declared architecture"),
    ("crafted-model-init", ["train", "--images", "img", "--labels", "lab", "--out",
                            "n.safetensors", "--init", "crafted.safetensors", "--steps", "1"], 2,
     "the weights do not match the declared architecture"),
    # resume with another architecture is refused
    ("resume-other-depth", _train("img", "lab", "--resume", "old.checkpoints",
                                  out="old.safetensors"), 2,
     "--depth: --resume 'old.checkpoints' has depth 2, got 1"),
    # degenerate data and arguments
    ("all-zero-labels", _train("img", "zero_lab"), 2, "no labelled cell in any of the 2 image"),
    ("steps-0", _train("img", "lab", "--steps", "0"), 2, "--steps: expected at least 1 step"),
    ("image-1x1", _train("tiny_img", "tiny_lab"), 2, "is too small; expected at least 8"),
    ("validate-every-neg", _train("img", "lab", "--validate-every", "-1"), 2,
     "--validate-every: expected an integer >= 0, got -1"),
    ("lr-negative", _train("img", "lab", "--lr", "-1"), 2, "--lr: expected a number > 0"),
    ("dropout-1.5", _train("img", "lab", "--dropout", "1.5"), 2, "--dropout: expected a number"),
    ("batch-0", _train("img", "lab", "--batch-size", "0"), 2, "--batch-size: expected an integer"),
    ("val-fraction", _train("img", "lab", "--val-fraction", "0.7"), 2, "--val-fraction"),
    ("time-limit-0", _train("img", "lab", "--time-limit", "0"), 2, "--time-limit: expected"),
    ("seed-negative", _train("img", "lab", "--seed", "-3"), 2, "--seed: expected an integer"),
    ("channel-axis-2d", _predict("img/0.tif", "pred", "--channel-axis", "5"), 2,
     "--channel-axis: img/0.tif has shape (48, 48), so axis 5 is not a channel axis"),
    ("image-0x0", _predict("empty.tif"), 2, "got an empty image of shape (0, 0)"),
    ("threshold-2", _predict("img", "pred", "--threshold", "2"), 2, "--threshold: expected"),
    ("min-size-neg", _predict("img", "pred", "--min-size", "-1"), 2, "--min-size: expected"),
    # stacks of 3 or 4 planes are never colour
    ("stack3-train", _train("stack3", "lab"), 2, "a stack of planes"),
    ("stack4-train", _train("stack4", "lab"), 2, "a stack of planes"),
    # 3 or 4 channels named by --channel-axis are colour, which a gray model turns gray by its
    # stored rule; other counts are refused
    ("stack5-predict", _predict("stack5/0.tif", "pred", "--channel-axis", "0"), 2,
     "the image has 5 channel(s) but the model expects 1"),
    # a model that computes garbage is refused as broken, wherever it is loaded
    ("model-nan-predict", _predict(model="nan.safetensors"), 2,
     "nan.safetensors: 1 weight(s) of head.weight are NaN or infinite; the file is broken"),
    ("model-inf-evaluate", ["evaluate", "--model", "inf.safetensors", "--images", "img",
                            "--labels", "lab", "--device", "cpu"], 2,
     "inf.safetensors: 1 weight(s) of down.0.0.weight are NaN or infinite"),
    ("model-huge-export", ["export", "--model", "huge.safetensors", "--format", "bioimageio",
                           "--out", "huge.zip"], 2,
     "huge.safetensors: a forward pass on a small test image gives NaN or infinite output"),
    ("model-int-predict", _predict(model="int.safetensors"), 2,
     "holds I64 values where the network has floating-point ones; the file is broken"),
    ("model-zeros-predict", _predict(model="zeros.safetensors"), 2,
     "it gives the same output for every pixel of a test image"),
    ("model-nan-init", _train("img", "lab", "--init", "nan.safetensors"), 2,
     "nan.safetensors: 1 weight(s) of head.weight are NaN or infinite"),
    ("model-nan-pt-init", _train("img", "lab", "--init", "nan.pt"), 2,
     "nan.pt: 1 weight(s) of head.weight are NaN or infinite"),
    # a model file's metadata that cannot be used names the file as broken
    ("meta-invalid-json", _predict(model="badjson.safetensors"), 2,
     "badjson.safetensors: its metadata 'architecture' is not valid JSON"),
    ("meta-bad-normalization", _predict(model="badnorm.safetensors"), 2,
     "badnorm.safetensors: the stored normalization is [1, 2], not a mapping"),
    ("meta-threshold-out-of-range", _predict(model="badthreshold.safetensors"), 2,
     "badthreshold.safetensors: the stored post-processing is invalid (threshold"),
    # messages that name the option or file, what came, and the fix
    ("seed-2**70", _train("img", "lab", "--seed", str(2**70)), 2,
     "--seed: expected an integer from 0 to 2**63 - 1"),
    ("run-settings-broken", ["train", "--run", "run_badsettings", "--device", "cpu"], 2,
     "run_badsettings/settings.json: not valid JSON"),
    ("run-data-changed", ["train", "--run", "run_changed", "--device", "cpu"], 2,
     "_labels.tif: does not match the sha256 recorded in run.json"),
    ("text-as-png", _predict("text.png"), 2, "text.png: cannot read it as a PNG image"),
    ("tile-invalid-names-option", _predict("img", "pred", "--tile", "101"), 2,
     "--tile: input size 101 along spatial axis 0 is not valid"),
    ("memory-suggests-a-tile-that-fits", _train("img", "lab", "--tile", "2004",
                                                "--batch-size", "4"), 2,
     "use a tile of 676 px (--tile 676)", {"NAPARI_UNET_MEMORY_LIMIT": "600M"}),
    # an image too large to segment at once: refused before it is read, with the fix
    ("huge-image-predict", _predict("big.tif"), 2,
     "big.tif: segmenting a 1200 x 1200 image at once needs about",
     {"NAPARI_UNET_MEMORY_LIMIT": "60M"}),
    # a resume continues the same run, from a checkpoint that is complete or refused
    ("resume-other-data", _train("img_b", "lab", "--resume", "run1.checkpoints", "--steps", "2",
                                 out="run1.safetensors"), 2,
     "--resume: run1.checkpoints/last.state.safetensors belongs to another run (training pair "
     "1, 2 of 2 (other pixels or labels)"),
    ("resume-other-settings", _train("img", "lab", "--resume", "run1.checkpoints", "--steps",
                                     "2", "--dropout", "0.3",
                                     out="run1.safetensors"), 2,
     "belongs to another run (dropout 0.0 -> 0.3)"),
    ("resume-corrupt-checkpoint", _train("img", "lab", "--resume", "bad.checkpoints", "--steps",
                                         "2", out="bad.safetensors"),
     2, "bad.checkpoints/last.state.safetensors: its contents do not match the sha256"),
    ("resume-weights-without-state", _train("img", "lab", "--resume", "orphan.checkpoints",
                                            out="orphan.safetensors"), 2,
     "no training state there, so orphan.checkpoints holds no complete checkpoint"),
    ("resume-a-model-file", _train("img", "lab", "--resume", "run1.safetensors",
                                   out="run1.safetensors"), 2,
     "--resume: 'run1.safetensors' is a model, not a checkpoint; continue its run with --resume "
     "run1.checkpoints, or fine-tune it with --init run1.safetensors"),
    # a full disk: one line with what was needed, the model written, no partial file
    ("disk-full-checkpoint", _train("img", "lab", "--validate-every", "0", out="full.safetensors"),
     2, "no space left on 'full.checkpoints' (needed ~", {"_full_disk": ".state.safetensors"}),
    ("huge-image-evaluate", ["evaluate", "--model", "model.safetensors", "--images", "big.tif",
                             "--labels", "lab", "--device", "cpu"], 2,
     "big.tif: segmenting a 1200 x 1200 image at once needs about",
     {"NAPARI_UNET_MEMORY_LIMIT": "60M"}),
]


@pytest.mark.parametrize(("argv", "status", "message", "env"),
                         [(*c[1:4], c[4] if len(c) > 4 else {}) for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_input(world, tmp_path, monkeypatch, capsys, argv, status, message, env):
    case = tmp_path / "case"
    shutil.copytree(world, case)
    monkeypatch.chdir(case)
    for key, value in env.items():  # e.g. a memory limit: the same answer on every machine
        if key == "_full_disk":
            _full_disk(monkeypatch, value)
        else:
            monkeypatch.setenv(key, value)
    before = _hashes(case)
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    line = err[-1]
    assert line.startswith(f"napari-unet {argv[0]}: error: "), line
    assert message in line, line
    assert_names_and_fix(line, argv)
    after = _hashes(case)
    assert {k: after.get(k) for k in before} == before
    assert not list(case.rglob("*.tmp")), "a partial file was left"


def _full_disk(monkeypatch, suffix: str) -> None:
    """Writes of files ending with ``suffix`` find a full disk (their partial file is made,
    then ENOSPC), as a real full volume or ``ulimit -f`` does."""
    import builtins
    import errno

    real_open = builtins.open

    def full_open(path, mode="r", *args, **kwargs):
        if "w" in mode and str(path).endswith(suffix + ".tmp"):
            real_open(path, mode).close()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", full_open)


#: the verbs a fix starts with ("use --tile 92", "add --force", "convert the image", ...)
FIX_VERBS = ("use", "add", "give", "choose", "drop", "remove", "convert", "replace", "copy",
             "crop", "pad", "free", "train", "retrain", "save", "re-save", "install", "run",
             "continue", "rename", "delete", "check", "restore", "edit", "pass", "set", "lower",
             "raise", "export", "download", "pick", "name", "write", "start", "read", "keep",
             "mark", "predict", "split", "resume", "evaluate", "paint")
_FIX = re.compile(r"(?:^|[;:,(—]|\bor\b|\band\b|\bthen\b)\s*(?:e\.g\.\s*)?(?:" +
                  "|".join(FIX_VERBS) + r")\b", re.IGNORECASE)


def assert_names_and_fix(line: str, argv: list[str]) -> None:
    """The house rule for every error, checked on every row: the line names an option the user
    typed or a file (one of the paths on the command line, or a file inside one) and contains
    a fix (a clause that starts with one of :data:`FIX_VERBS`)."""
    text = line.partition(": error: ")[2]
    paths = [a for a in argv if not a.startswith("-") and Path(a).exists()]
    names_file = any(p.rstrip("/").split("/")[0] in text for p in paths)
    assert re.search(r"--[a-z]", text) or names_file, f"names no option or file: {line}"
    assert _FIX.search(text), f"gives no fix: {line}"


def test_pairing_by_name_not_position(tmp_path, monkeypatch):
    """img1, img2, img10 ↔ lab01, lab02, lab10: each image trains on its own labels."""
    from napari_unet.commands.files import read_pairs

    (tmp_path / "i").mkdir()
    (tmp_path / "l").mkdir()
    for n in (1, 2, 10):
        tifffile.imwrite(tmp_path / "i" / f"img{n}.tif", np.full((8, 8), n, np.uint16))
        tifffile.imwrite(tmp_path / "l" / f"lab{n:02d}.tif", np.full((8, 8), n, np.int32))
    rows = read_pairs([tmp_path / "i"], [tmp_path / "l"])
    assert len(rows) == 3
    for row in rows:
        assert int(row["image"][0, 0]) == int(row["labels"][0, 0]), row["path"]


def test_unique_output_names(world, tmp_path):
    """cell.1.tif / cell.2.tif and img.png / img.tif give one output each; none is lost."""
    import imageio.v3 as iio

    inp = tmp_path / "in"
    inp.mkdir()
    image = tifffile.imread(world / "img" / "0.tif")
    for name in ("cell.1.tif", "cell.2.tif", "img.tif"):
        tifffile.imwrite(inp / name, image)
    iio.imwrite(inp / "img.png", (image // 8).astype(np.uint8))
    out = tmp_path / "out"
    assert main(["predict", "--model", str(world / "model.safetensors"), "--input", str(inp),
                 "--output", str(out), "--device", "cpu"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["cell.1_labels.tif", "cell.2_labels.tif", "img_png_labels.tif",
                     "img_tif_labels.tif"]
    # and --force replaces them
    assert main(["predict", "--model", str(world / "model.safetensors"), "--input", str(inp),
                 "--output", str(out), "--device", "cpu", "--force"]) == 0


def test_rgb_tiff_is_colour_but_planes_are_a_stack(tmp_path):
    from napari_unet.cli import CLIError
    from napari_unet.commands.files import read_image

    rgb = np.zeros((10, 12, 3), np.uint8)
    rgb[..., 1] = 5
    tifffile.imwrite(tmp_path / "rgb.tif", rgb, photometric="rgb")
    image, axis = read_image(tmp_path / "rgb.tif")
    assert image.shape == (10, 12, 3) and axis == -1
    tifffile.imwrite(tmp_path / "planes.tif", np.moveaxis(rgb, -1, 0), photometric="minisblack")
    with pytest.raises(CLIError, match="stack of planes"):
        read_image(tmp_path / "planes.tif")
    image, axis = read_image(tmp_path / "planes.tif", channel_axis=0)
    assert image.shape == (10, 12, 3) and axis == -1
    four = np.zeros((10, 12, 4), np.uint16)
    four[..., 3] = 7  # a 4th channel, not marked as alpha: kept
    tifffile.imwrite(tmp_path / "four.tif", four, photometric="rgb", extrasamples=["unspecified"])
    assert read_image(tmp_path / "four.tif")[0].shape == (10, 12, 4)
