"""What makes a run this run, so that ``--resume`` continues it and nothing else.

A checkpoint stores :func:`run_identity` (a sha256 of every training pair and the settings,
except :data:`FREE_SETTINGS`: the budget, where and how fast the run goes); :func:`check_same_run` refuses to resume it with other
pairs or settings, naming what differs (:func:`resume_differences`) and the fixes: the same
images and settings, ``--force`` to resume anyway, or ``--init`` to fine-tune from the model.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

__all__ = ["FREE_SETTINGS", "check_same_run", "resume_differences", "run_identity"]

#: settings that say how long, where and how fast a run goes and how often it is looked at,
#: not what each step computes: a resume may change them (``--steps`` to train longer); the
#: memory layout changes the order of the sums, not what they are
FREE_SETTINGS = ("steps", "time_limit", "validate_every", "checkpoint_dir", "checkpoint_every",
                 "history_every", "device", "threads", "cpu_channels_last")


def _array_hash(h, a) -> None:
    if a is None:
        h.update(b"none")
        return
    a = np.ascontiguousarray(a)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())


def run_identity(pairs, config) -> dict[str, Any]:
    """What makes a run this run: a sha256 of every training pair (image, labels, annotated
    and background masks, channel axis, sparse rule, spacing) and the settings, except
    :data:`FREE_SETTINGS` (the budget, validation and checkpoint frequencies, device,
    threads, checkpoint folder).

    >>> from napari_unet.core.training import TrainConfig, TrainingPair
    >>> pair = TrainingPair(np.zeros((8, 8)), np.ones((8, 8), int))
    >>> ident = run_identity([pair], TrainConfig(steps=5))
    >>> len(ident["data"]), "steps" in ident["settings"], ident["settings"]["depth"]
    (1, False, 4)
    """
    data = []
    for p in pairs:
        h = hashlib.sha256()
        for a in (p.image, p.labels, p.annotated, getattr(p, "background", None)):
            _array_hash(h, a)
        h.update(repr((p.channel_axis, getattr(p, "sparse", False),
                       getattr(p, "spacing", None))).encode())
        data.append(h.hexdigest())
    settings = json.loads(json.dumps(config.to_dict(), default=str))
    for key in FREE_SETTINGS:
        settings.pop(key, None)
    return {"data": data, "settings": settings}


def resume_differences(stored: dict | None, current: dict) -> list[str]:
    """What differs between the run identity ``stored`` in a checkpoint and ``current``
    (:func:`run_identity`), in words; empty when it is the same run (or the checkpoint
    predates identities).

    >>> resume_differences({"data": ["a", "b"], "settings": {"lr": 0.001, "steps": 10}},
    ...                    {"data": ["a", "c"], "settings": {"lr": 0.01, "steps": 10}})
    ['training pair 2 of 2 (other pixels or labels)', 'lr 0.001 -> 0.01']
    """
    if not stored:
        return []
    out = []
    old, new = stored.get("data") or [], current["data"]
    if len(old) != len(new):
        out.append(f"{len(new)} training pair(s) instead of {len(old)}")
    else:
        changed = [i for i, (a, b) in enumerate(zip(old, new, strict=True)) if a != b]
        if changed:
            which = ", ".join(str(i + 1) for i in changed[:5]) + (" ..." if len(changed) > 5
                                                                  else "")
            out.append(f"training pair {which} of {len(new)} (other pixels or labels)")
    s_old, s_new = stored.get("settings") or {}, current["settings"]
    for key in sorted(set(s_old) | set(s_new)):
        if s_old.get(key) != s_new.get(key):
            out.append(f"{key} {s_old.get(key)!r} -> {s_new.get(key)!r}".replace("'", ""))
    return out


def check_same_run(trainer, info: dict) -> None:
    """Refuse to resume, with the checkpoint ``info``
    (:func:`napari_unet.core.training.checkpoint.load_checkpoint`), a run on other data or
    settings than ``trainer``'s: a ValueError naming what differs and the fixes."""
    differ = resume_differences(info.get("identity"), run_identity(trainer.pairs, trainer.config))
    if differ:
        raise ValueError(
            f"resume: {info.get('source', 'the checkpoint')} belongs to another run ("
            + "; ".join(differ) + "); continue it with the same images and settings, add "
            "--force to resume it anyway, or fine-tune from its model with --init")
