"""The JSON-lines event format (core/events.py) and ``napari-unet train --events`` in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.core.io import load_model
from napari_unet.core.synthetic import synthetic_cells
from napari_unet.engine import events as ev
from napari_unet.engine.session import TrainSession

TINY = ["--depth", "2", "--base-channels", "4", "--tile", "60", "--device", "cpu",
        "--val-fraction", "0.2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("events")
    (root / "img").mkdir()
    (root / "lab").mkdir()
    image, labels = synthetic_cells((48, 48), radius=9, seed=0)
    tifffile.imwrite(root / "img" / "0.tif", (image * 1000).astype(np.uint16))
    tifffile.imwrite(root / "lab" / "0.tif", labels)
    return root


def _train(data, out, *extra):
    return main(["train", "--images", str(data / "img"), "--labels", str(data / "lab"),
                 "--out", str(out), *TINY, *extra])


def test_lines_are_strict_json_without_nan_and_with_plain_types():
    line = ev.dumps({"kind": "step", "loss": np.float32(0.5), "lr": float("inf"),
                     "shape": np.array([2, 3]), "path": __import__("pathlib").Path("a/b")})
    assert "\n" not in line and "Infinity" not in line
    obj = json.loads(line)
    assert obj == {"kind": "step", "loss": 0.5, "lr": None, "shape": [2, 3], "path": "a/b"}
    assert ev.loads(line) == obj
    with pytest.raises(ValueError, match="JSON object"):
        ev.loads("training on cpu")
    with pytest.raises(ValueError, match="kind"):
        ev.loads('{"step": 1}')
    with pytest.raises(ValueError, match="kind: expected one of"):
        ev.make_event("finished")


def test_errors_are_classified_with_a_fix():
    settings = {"tile": 572, "batch_size": 4, "base_channels": 64, "depth": 12}
    kind, fix = ev.classify_error(RuntimeError("DefaultCPUAllocator: can't allocate memory: "
                                               "you tried to allocate 9 GB"), settings=settings)
    assert kind == "out_of_memory"
    assert "--tile 286" in fix and "--batch-size 2" in fix and "--base-channels 32" in fix
    assert "--depth 4" in fix
    assert ev.classify_error(ValueError("--tile: expected"))[0] == "bad_input"
    refused = ValueError("memory: training a U-Net ... needs about 9 GiB, but cpu has 2 GiB "
                         "available; use a batch of 1 or use a tile of 188 px")
    assert ev.classify_error(refused) == ("out_of_memory", "use a batch of 1 or use a tile of "
                                                           "188 px")
    assert ev.classify_error(KeyError("x"))[0] == "internal"
    crash = ev.crash_event(1, "INFO x\nTraceback\nRuntimeError: CUDA out of memory\n")
    assert crash["error"] == "out_of_memory" and "CUDA out of memory" in crash["message"]
    assert ev.crash_event(-11, "Segmentation fault")["error"] == "crashed"
    assert "SIGSEGV" in ev.crash_event(-11)["message"]


def test_events_module_and_client_import_neither_torch_nor_qt():
    code = ("import sys, napari_unet.engine.events, napari_unet.engine.process, "
            "napari_unet.engine.session\n"
            "print(' '.join(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'qtpy', 'PyQt5', 'PyQt6', 'napari', 'magicgui')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""


def test_events_file_has_every_event_and_ends_with_done(data, tmp_path):
    path = tmp_path / "ev.jsonl"
    assert _train(data, tmp_path / "m.safetensors", "--steps", "4", "--validate-every", "2",
                  "--events", str(path)) == 0
    lines = path.read_text().splitlines()
    events = [ev.loads(line) for line in lines]
    kinds = [e["kind"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "done"
    assert kinds.count("step") == 4 and kinds.count("validation") == 2
    assert [e["step"] for e in events if e["kind"] == "step"] == [1, 2, 3, 4]
    started, done = events[0], events[-1]
    assert started["protocol"] == ev.PROTOCOL and started["device"] == "cpu"
    assert started["settings"]["tile"] == 60 and started["architecture"]["depth"] == 2
    assert done["model"] == str(tmp_path / "m.safetensors") and done["step"] == 4
    assert os.path.isabs(started["checkpoint_dir"])
    assert set(done["metrics"]) >= {"iou", "rand_error"}
    ckpts = [e for e in events if e["kind"] == "checkpoint"]
    assert ckpts and all(e["path"].endswith("last.safetensors") for e in ckpts)
    load_model(done["checkpoint"])
    load_model(done["model"])


def test_stdout_carries_json_only_and_an_error_is_the_last_line(data, tmp_path, capsys):
    assert _train(data, tmp_path / "m.safetensors", "--steps", "1", "--validate-every", "0",
                  "--events", "-") == 0
    out = capsys.readouterr().out.splitlines()
    assert [ev.loads(line)["kind"] for line in out] == ["started", "step", "done"]
    # an error while reading the data: the stream still ends with a terminal event
    assert main(["train", "--images", str(tmp_path / "missing"), "--labels", str(data / "lab"),
                 "--out", str(tmp_path / "x.safetensors"), "--events", "-"]) == 2
    captured = capsys.readouterr()
    events = [ev.loads(line) for line in captured.out.splitlines()]
    assert [e["kind"] for e in events] == ["error"]
    assert events[0]["error"] == "bad_input" and events[0]["exception"]
    assert "error:" in captured.err  # the usual one-line message stays on stderr


class _Trainer:
    """What TrainSession needs of a Trainer, recording the requests."""

    def __init__(self):
        self.step, self.calls = 3, []

    def request_stop(self):
        self.calls.append("stop")

    def request_pause(self):
        self.calls.append("pause")

    def request_resume(self):
        self.calls.append("resume")

    def save_checkpoint(self, name="last"):
        self.calls.append("save")
        return f"ckpt/{name}.safetensors"


def _until(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.01)


def test_control_lines_and_end_of_input_reach_the_trainer():
    rfd, wfd = os.pipe()
    session = TrainSession(control="-", control_stream=os.fdopen(rfd, "r"))
    session.trainer = trainer = _Trainer()
    with os.fdopen(wfd, "w") as writer:
        writer.write("pause\nbogus\nresume\n")
        writer.flush()
        _until(lambda: len(trainer.calls) >= 2)
        assert trainer.calls == ["pause", "resume"]
    # end of input: the parent is gone
    session._reader.join(60)
    assert trainer.calls[-1] == "stop" and session.stop_reason == "end of input"
    session.close()
