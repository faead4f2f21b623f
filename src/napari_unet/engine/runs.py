"""Run folders: everything one training used and produced, on disk, so nothing is lost.

A run directory holds::

    run.json          the record: created, status, seed, versions, parent model (+ sha256),
                      the data files (+ sha256 of each), sparse
    settings.json     the training settings (``TrainConfig.to_dict()``, plus optional
                      ``"architecture"`` and ``"options"``)
    data/             NNN_<name>_image.tif, NNN_<name>_labels.tif and, when present,
                      NNN_<name>_annotated.tif / NNN_<name>_background.tif (uint8 masks);
                      a 3D volume is a TIFF stack, and ``ndim`` / ``spacing`` are recorded
                      per pair in run.json and in settings.json (``TrainConfig.ndim``)
    metrics.jsonl     one JSON object per training event
    last.safetensors, best.safetensors (+ ``.state.safetensors``): the trainer's checkpoints
    model.safetensors the final model

JSON files and TIFF files are written to a temporary name and renamed (atomic); checkpoints are
the trainer's own (:mod:`napari_unet.core.training.checkpoint`). Training a run folder is
:mod:`napari_unet.engine.training`. Importing this module imports no torch.

>>> import tempfile, numpy as np
>>> from napari_unet.core.training.data import TrainingPair
>>> run = new_run_dir(tempfile.mkdtemp(), name="demo")
>>> pair = TrainingPair(np.zeros((8, 8), np.float32), np.eye(8, dtype=np.uint16))
>>> _ = write_run(run, [pair], settings={"steps": 3}, seed=1)
>>> pairs, settings, record = read_run(run)
>>> settings["steps"], record["status"], int(pairs[0].labels.sum())
(3, 'running', 8)
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import os
import platform
import re
from collections.abc import Iterable, Sequence
from importlib import metadata as _metadata
from pathlib import Path
from typing import Any

import numpy as np

from napari_unet import __distribution__

__all__ = [
    "STATUSES",
    "RunInfo",
    "append_metrics",
    "default_runs_root",
    "event_record",
    "list_runs",
    "new_run_dir",
    "read_metrics",
    "read_run",
    "run_model_path",
    "set_status",
    "sha256_file",
    "write_run",
]

logger = logging.getLogger(__name__)

STATUSES = ("running", "done", "stopped", "error")
RUN_JSON, SETTINGS_JSON, METRICS = "run.json", "settings.json", "metrics.jsonl"
_PACKAGES = (__distribution__, "numpy", "torch", "scipy", "scikit-image", "safetensors", "tifffile",
             "napari")


def default_runs_root() -> Path:
    """``$NAPARI_UNET_RUNS`` if set, else ``~/.napari-unet/runs``.

    >>> isinstance(default_runs_root(), Path)
    True
    """
    env = os.environ.get("NAPARI_UNET_RUNS")
    return Path(env).expanduser() if env else Path.home() / ".napari-unet" / "runs"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-.")[:60] or "pair"


def new_run_dir(root: str | os.PathLike | None = None, *, name: str | None = None) -> Path:
    """Create and return a fresh run directory ``<root>/<YYYYmmdd-HHMMSS>-<name>``.

    A number is appended when the name is taken, so two runs never share a folder.

    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> new_run_dir(root, name="a") != new_run_dir(root, name="a")
    True
    """
    root = default_runs_root() if root is None else Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    stem = _dt.datetime.now().strftime("%Y%m%d-%H%M%S") + "-" + _safe_name(name or "run")
    for i in range(1, 10_000):
        path = root / (stem if i == 1 else f"{stem}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"root: could not create a new run folder under {root}")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(value, fh, indent=1, default=_json_default)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _write_tif(path: Path, array: np.ndarray) -> str:
    import tifffile

    tmp = path.with_name(path.name + ".tmp")
    tifffile.imwrite(tmp, np.ascontiguousarray(array), photometric="minisblack")
    os.replace(tmp, path)
    return sha256_file(path)


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = _metadata.version(name)
        except _metadata.PackageNotFoundError:
            continue
    return out


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{path.parent}: no {path.name}; give a run folder") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); the run folder's record is broken: "
                         "restore the file, or start a new run") from None


def write_run(
    run_dir: str | os.PathLike,
    pairs: Sequence,
    *,
    settings: Any,
    seed: int,
    parent_model: str | os.PathLike | None = None,
    sparse: bool = True,
    names: Sequence[str] | None = None,
) -> dict:
    """Write the data files, ``settings.json`` and ``run.json`` (status "running") of a run.

    Parameters
    ----------
    run_dir : path
        The run folder (created if needed); it must not hold a run yet.
    pairs : sequence of TrainingPair
        Saved as TIFF files in ``data/`` (a 3D volume as a TIFF stack); a pair's ``background``
        mask, ``sparse`` flag, ``ndim`` and ``spacing`` are kept when the pair has them.
    settings : dict or TrainConfig
        The training settings (a TrainConfig is stored as its ``to_dict()``).
    seed : int
    parent_model : path, optional
        The model this run fine-tunes; its full path and sha256 are recorded.
    sparse : bool
        Whether the annotations follow the sparse rule (painted cells + band + background).
    names : sequence of str, optional
        One name per pair for the file names (e.g. the layer names).

    Returns
    -------
    The run record (as written to ``run.json``).
    """
    run_dir = Path(run_dir)
    if (run_dir / RUN_JSON).exists():
        raise FileExistsError(f"run_dir: {run_dir} already holds a run; use new_run_dir()")
    if not pairs:
        raise ValueError("pairs: expected at least one training pair, got none")
    data_dir = run_dir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for i, pair in enumerate(pairs):
        name = _safe_name(names[i] if names is not None else f"pair{i}")
        stem = f"{i:03d}_{name}"
        files: dict[str, str | None] = {"image": f"{stem}_image.tif", "labels": f"{stem}_labels.tif"}
        arrays = {"image": np.asarray(pair.image), "labels": np.asarray(pair.labels)}
        for key in ("annotated", "background"):
            mask = getattr(pair, key, None)
            files[key] = None if mask is None else f"{stem}_{key}.tif"
            if mask is not None:
                arrays[key] = (np.asarray(mask) != 0).astype(np.uint8)
        hashes = {key: _write_tif(data_dir / files[key], arr) for key, arr in arrays.items()}
        items.append({
            "name": name, **{k: (None if v is None else f"data/{v}") for k, v in files.items()},
            "sha256": hashes, "channel_axis": pair.channel_axis,
            "sparse": bool(getattr(pair, "sparse", sparse)),
            "ndim": int(getattr(pair, "ndim", None) or 2),
            "spacing": None if getattr(pair, "spacing", None) is None else list(pair.spacing),
        })
    if hasattr(settings, "to_dict"):
        settings = settings.to_dict()
    _write_json(run_dir / SETTINGS_JSON, dict(settings))
    parent = None if parent_model is None else Path(parent_model).expanduser().resolve()
    record = {
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "status": "running",
        "seed": int(seed),
        "versions": _versions(),
        "parent_model": None if parent is None else str(parent),
        "parent_sha256": None if parent is None or not parent.is_file() else sha256_file(parent),
        "data": items,
        "sparse": bool(sparse),
    }
    _write_json(run_dir / RUN_JSON, record)
    return record


def read_run(run_dir: str | os.PathLike, *, verify: bool = True) -> tuple[list, dict, dict]:
    """Read a run back: ``(pairs, settings, record)``.

    With ``verify`` each data file's sha256 must match the record (a ValueError names the file
    that changed).
    """
    import tifffile

    from napari_unet.core.training.data import TrainingPair

    run_dir = Path(run_dir)
    record = _read_json(run_dir / RUN_JSON)
    settings = _read_json(run_dir / SETTINGS_JSON)
    fields = {f.name for f in dataclasses.fields(TrainingPair)}
    pairs = []
    for item in record.get("data", []):
        arrays = {}
        for key in ("image", "labels", "annotated", "background"):
            rel = item.get(key)
            if rel is None:
                continue
            path = run_dir / rel
            if verify and sha256_file(path) != item["sha256"][key]:
                raise ValueError(
                    f"{path}: does not match the sha256 recorded in {RUN_JSON}; the file was "
                    "changed after the run was written: restore it, or start a new run"
                )
            arrays[key] = tifffile.imread(path)
        kwargs = {"annotated": arrays.get("annotated"), "channel_axis": item.get("channel_axis")}
        if "background" in fields:
            kwargs["background"] = arrays.get("background")
        elif arrays.get("background") is not None:
            logger.warning("%s: this version ignores the background mask", run_dir)
        if "sparse" in fields:
            kwargs["sparse"] = bool(item.get("sparse", record.get("sparse", False)))
        # 3D volumes are TIFF stacks like the 2D images; runs written before 3D are 2D
        kwargs["ndim"] = int(item.get("ndim") or settings.get("ndim") or 2)
        if item.get("spacing") is not None:
            kwargs["spacing"] = tuple(item["spacing"])
        pairs.append(TrainingPair(arrays["image"], arrays["labels"], **kwargs))
    return pairs, settings, record


def set_status(run_dir: str | os.PathLike, status: str) -> None:
    """Set ``run.json``'s status (one of :data:`STATUSES`), atomically."""
    if status not in STATUSES:
        raise ValueError(f"status: expected one of {STATUSES}, got {status!r}")
    path = Path(run_dir) / RUN_JSON
    record = _read_json(path)
    record["status"] = status
    record["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    _write_json(path, record)


def append_metrics(run_dir: str | os.PathLike, event: dict) -> None:
    """Append one event (a JSON object) as a line of ``metrics.jsonl``."""
    line = json.dumps(event, default=_json_default)
    with open(Path(run_dir) / METRICS, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
        fh.flush()


def read_metrics(run_dir: str | os.PathLike) -> list[dict]:
    """The events of ``metrics.jsonl`` (a line cut short by a crash is skipped)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def event_record(event) -> dict:
    """A training event (a TrainEvent or a dict) as the JSON object stored in metrics.jsonl:
    the same object as a line of ``napari-unet train --events`` (:mod:`napari_unet.engine.events`).

    >>> event_record({"kind": "step", "step": 1, "loss": 0.5})["kind"]
    'step'
    """
    from napari_unet.engine.events import event_dict

    if not isinstance(event, dict):
        return event_dict(event)  # the JSON-lines protocol's object (docs/training-events.md)
    d = dict(event)
    d.setdefault("time", round(_dt.datetime.now(_dt.timezone.utc).timestamp(), 3))
    return d


def run_model_path(run_dir: str | os.PathLike) -> Path | None:
    """The run's most useful model file: model, then best, then last; None if none exists."""
    for name in ("model", "best", "last"):
        path = Path(run_dir) / f"{name}.safetensors"
        if path.is_file():
            return path
    return None


@dataclasses.dataclass
class RunInfo:
    """A run folder in a listing: its record's status, the steps reached, the best validation."""

    path: Path
    created: str
    status: str
    steps: int
    best: dict | None  # metrics of the best validation (lowest rand_error), or None
    parent_model: str | None
    pairs: int

    @property
    def score(self) -> float | None:
        """IoU of the best validation, or None."""
        return None if not self.best else self.best.get("iou")

    def describe(self) -> str:
        score = "" if self.score is None else f", IoU {self.score:.3f}"
        return f"{self.path.name}: {self.status}, {self.steps} steps{score}"


def _info(run_dir: Path) -> RunInfo:
    record = _read_json(run_dir / RUN_JSON)
    steps, best = 0, None
    for event in read_metrics(run_dir):
        steps = max(steps, int(event.get("step") or 0))
        metrics = event.get("metrics")
        if (event.get("kind") or event.get("event")) == "validation" and metrics:
            score = metrics.get("rand_error", float("inf"))
            if score == score and (best is None or score < best.get("rand_error", float("inf"))):
                best = {**metrics, "step": int(event.get("step") or 0)}
    return RunInfo(run_dir, record.get("created", ""), record.get("status", "?"), steps, best,
                   record.get("parent_model"), len(record.get("data", [])))


def list_runs(root: str | os.PathLike | None = None,
              paths: Iterable[str | os.PathLike] | None = None) -> list[RunInfo]:
    """The run folders under ``root`` (or exactly ``paths``), oldest first.

    >>> import tempfile
    >>> list_runs(tempfile.mkdtemp())
    []
    """
    if paths is None:
        root = default_runs_root() if root is None else Path(root).expanduser()
        paths = sorted(p.parent for p in root.glob(f"*/{RUN_JSON}")) if root.is_dir() else []
    out = []
    for p in paths:
        try:
            out.append(_info(Path(p)))
        except (OSError, ValueError) as exc:
            logger.warning("skipping run folder %s: %s", p, exc)
    return sorted(out, key=lambda info: (info.created, str(info.path)))
