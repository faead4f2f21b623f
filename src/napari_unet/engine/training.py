"""Training a run folder (:mod:`napari_unet.engine.runs`) as written: its settings as a
TrainConfig, a Trainer on its data and parent model, and its events recorded in
``metrics.jsonl`` with the status at the end. Importing this module imports no torch: the
functions import it when called."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from napari_unet.engine.runs import (
    RUN_JSON,
    SETTINGS_JSON,
    append_metrics,
    event_record,
    read_run,
    set_status,
)

__all__ = ["config_from_settings", "record_events", "trainer_from_run"]

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- training (torch)
def config_from_settings(settings: dict, **changes):
    """A TrainConfig from a ``settings.json`` dict (unknown keys are ignored)."""
    from napari_unet.core.augment.config import AugmentConfig
    from napari_unet.core.training.config import TrainConfig

    names = {f.name for f in dataclasses.fields(TrainConfig)}
    kwargs = {k: v for k, v in settings.items() if k in names}
    aug = kwargs.get("augment")
    if isinstance(aug, dict):
        aug_names = {f.name for f in dataclasses.fields(AugmentConfig)}
        kwargs["augment"] = AugmentConfig(**{
            k: tuple(v) if isinstance(v, list) else v for k, v in aug.items() if k in aug_names
        })
    kwargs.update(changes)
    return TrainConfig(**kwargs)


def trainer_from_run(run_dir: str | os.PathLike, **changes):
    """A Trainer for the run as written: its data files, settings, seed and parent model.

    Checkpoints go into ``run_dir``; ``changes`` override settings (e.g. ``device``,
    ``threads``).
    """
    from napari_unet.core.training.trainer import Trainer

    run_dir = Path(run_dir)
    pairs, settings, record = read_run(run_dir)
    parent = record.get("parent_model")
    if parent is not None and not Path(parent).is_file():
        raise FileNotFoundError(
            f"{run_dir / RUN_JSON}: the parent model {parent!r} is missing; restore it, or edit "
            f"'parent_model' in {RUN_JSON}"
        )
    try:
        changes = {"seed": int(record.get("seed", settings.get("seed", 0))),
                   "checkpoint_dir": str(run_dir), **changes}
        config = config_from_settings(settings, **changes)
    except (TypeError, ValueError) as err:  # a setting the file holds, not one the user typed
        raise ValueError(f"{run_dir / SETTINGS_JSON}: {err}; edit the file, or start a new "
                         "run") from None
    return Trainer(pairs, config, init_model=parent)


def record_events(run_dir: str | os.PathLike, events: Iterable) -> Iterator:
    """Pass ``events`` through, appending each to ``metrics.jsonl`` and setting the status
    (done / stopped at the end, error on an exception, stopped when closed early)."""
    status = "stopped"
    try:
        for event in events:
            append_metrics(run_dir, event_record(event))
            kind = event.get("kind") if isinstance(event, dict) else event.kind
            if kind in ("done", "stopped"):
                status = kind
            yield event
    except GeneratorExit:
        status = "stopped"
        close = getattr(events, "close", None)
        if close is not None:
            close()  # the trainer saves its last checkpoint
        raise
    except BaseException:
        status = "error"
        raise
    finally:
        try:
            set_status(run_dir, status)
        except OSError as exc:  # pragma: no cover - disk gone
            logger.error("could not update the run status in %s: %s", run_dir, exc)
