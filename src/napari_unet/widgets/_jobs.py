"""Work run in napari worker threads by the Train and Predict widgets (no Qt here).

Each function is a plain function or generator over :mod:`napari_unet.core`; the widgets wrap
them with ``napari.qt.threading.create_worker``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

import numpy as np

logger = logging.getLogger(__name__)

#: niceness added to the worker threads that train or preview (Linux: per thread)
BACKGROUND_NICE = 10


def background_threads() -> int:
    """Torch CPU threads for work beside the GUI: every usable core but one (at least 1)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, cores - 1)


def lower_thread_priority(nice: int = BACKGROUND_NICE) -> bool:
    """Lower the calling thread's CPU priority so that the GUI thread wins the cores (Linux).

    Threads the caller starts later (torch's OpenMP team) inherit it. Returns whether it was
    applied; elsewhere it is a no-op.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, max(current, nice)))
        return True
    except (AttributeError, OSError) as exc:  # pragma: no cover - platform dependent
        logger.debug("could not lower the worker thread's priority: %s", exc)
        return False


class StepSnapshots:
    """Copies of the model being trained, taken between optimiser steps, for other threads.

    The training thread calls :meth:`serve` between steps (where no step is in progress); any
    other thread calls :meth:`get`, which asks for a copy and waits for the next step boundary.
    While the trainer is paused (or once it has finished) the copy taken then is returned at
    once: the weights do not change in between.
    """

    def __init__(self, trainer):
        self._trainer = trainer
        self._cond = threading.Condition()
        self._wanted = False
        self._snap = None
        self._version = 0
        self._resting = False  # paused or finished: the last copy is current

    def serve(self, *, resting: bool = False) -> None:
        """Training thread, between steps: hand out a copy if one was asked for (or ``resting``)."""
        with self._cond:
            if not (self._wanted or resting):
                self._resting = False
                return
        snap = self._trainer.snapshot()
        with self._cond:
            self._snap, self._wanted, self._resting = snap, False, resting
            self._version += 1
            self._cond.notify_all()

    def get(self, *, timeout: float = 60.0):
        """(model copy, metadata) at a step boundary; TimeoutError if none came in ``timeout`` s."""
        with self._cond:
            if self._resting and self._snap is not None:
                return self._snap
            version = self._version
            self._wanted = True
            if not self._cond.wait_for(lambda: self._version > version, timeout):
                raise TimeoutError(
                    f"the training thread gave no model copy within {timeout:g} s (is it stuck "
                    "in a long step?); try again"
                )
            return self._snap


def run_training(trainer, state: dict, *, run_dir=None, snapshots: StepSnapshots | None = None):
    """Drive ``trainer.run()``; records the worker thread in ``state`` and sets ``state["done"]``.

    ``state["thread"]`` is the id of the thread the training steps ran on (tests check that it
    is not the GUI thread); ``state["done"]`` is a :class:`threading.Event` set when it ends.
    The thread runs at a lower priority, so that the GUI thread always finds a core (the torch
    thread count while training is the trainer's ``config.threads``). With ``run_dir`` every
    event goes to the run's metrics.jsonl and the run's status is kept
    (:func:`napari_unet.core.runs.record_events`); ``snapshots`` is served between steps.
    """
    from napari_unet.core.runs import record_events

    state["thread"] = threading.get_ident()
    events = trainer.run()
    if run_dir is not None:
        events = record_events(run_dir, events)
    try:
        lower_thread_priority()
        for event in events:
            if snapshots is not None:  # between two steps: the weights are at rest
                snapshots.serve(resting=event.kind == "paused")
            yield event
    finally:
        events.close()  # a closed worker: the trainer saves its last checkpoint
        if snapshots is not None:
            snapshots.serve(resting=True)
        state["done"].set()


def live_prediction(snapshots: StepSnapshots, crop: np.ndarray, *, channel_axis=None):
    """Predict ``crop`` with a copy of the model being trained (taken between two steps);
    returns int32 labels."""
    from napari_unet.core.postprocess import labels_from_probabilities
    from napari_unet.core.predict import predict_image

    lower_thread_priority()
    model, metadata = snapshots.get()
    prob = predict_image(model, crop, metadata=metadata, channel_axis=channel_axis, device="cpu")
    return labels_from_probabilities(prob)


def augmentation_samples(image, labels, config, *, n: int = 8, seed: int = 0, side: int = 256):
    """``n`` augmented versions of (a centre crop of) one image/labels pair, as stacks.

    Returns (float32 images (n, h, w), int32 labels (n, h, w)).
    """
    import torch

    from napari_unet.core.augment import Augmenter
    from napari_unet.core.data import normalize

    image = normalize(np.asarray(image, dtype=np.float32))
    labels = np.asarray(labels)
    h, w = labels.shape[-2:]
    r0, c0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    image = image[r0 : r0 + side, c0 : c0 + side]
    labels = labels[r0 : r0 + side, c0 : c0 + side]
    x = torch.from_numpy(np.ascontiguousarray(image)).expand(n, 1, *image.shape).contiguous()
    y = torch.from_numpy(labels.astype(np.int64)).expand(n, *labels.shape).contiguous()
    out_image, out_labels = Augmenter(config, seed=seed)(x, y)[:2]
    return out_image[:, 0].numpy().astype(np.float32), out_labels.numpy().astype(np.int32)


def iter_prediction(model, metadata, image, *, tta: bool, stack: bool, channel_axis=None,
                    threshold: float = 0.5, truth=None):
    """Yield core prediction progress, then one :class:`PredictionResult` (all in the worker).

    The labels (and, with ``truth``, the comparison and scores) are computed here too, so that
    the GUI thread only shows layers.
    """
    from napari_unet.core.postprocess import labels_from_probabilities
    from napari_unet.core.predict import iter_predict_stack, iter_predict_tiled, normalizer

    if stack:
        events = iter_predict_stack(
            model, image, metadata=metadata, channel_axis=channel_axis, tta=tta
        )
    else:
        x = np.asarray(image, dtype=np.float32)
        x = x[None] if channel_axis is None else np.moveaxis(x, channel_axis, 0)
        chw = normalizer(metadata, channel_axis=0)(x)
        events = iter_predict_tiled(model, chw, tta=tta)
    prob = None
    for event in events:
        if event.result is not None:
            prob = event.result
        yield event
    if prob is None:
        return
    if stack:
        labels = np.stack([labels_from_probabilities(p, threshold=threshold) for p in prob])
    else:
        labels = labels_from_probabilities(prob, threshold=threshold)
    comparison = scores = None
    if truth is not None:
        comparison, scores = compare_instances(labels, truth)
    yield PredictionResult(prob, labels, comparison, scores)


class PredictionResult:
    """What the Predict worker hands to the GUI: probabilities, labels, comparison, scores."""

    def __init__(self, prob, labels, comparison=None, scores=None):
        self.prob, self.labels, self.comparison, self.scores = prob, labels, comparison, scores


def compare_instances(pred: np.ndarray, truth: np.ndarray, *, threshold: float = 0.5):
    """Comparison map (1 matched, 2 missed true cell, 3 extra predicted cell) and the scores.

    At an IoU threshold ≥ 0.5 a match is unique, so a pair counts as matched when its IoU reaches
    the threshold. Scores come from :mod:`napari_unet.core.metrics`.
    """
    from napari_unet.core.metrics import foreground_iou, instance_matching

    pred = np.asarray(pred)
    truth = np.asarray(truth)
    scores = instance_matching(pred, truth, threshold=threshold)
    scores["iou"] = foreground_iou(pred > 0, truth > 0)
    both = (pred > 0) & (truth > 0)
    pairs, inter = np.unique(np.stack([truth[both], pred[both]]), axis=1, return_counts=True)
    size_t = np.bincount(truth.ravel().astype(np.int64))
    size_p = np.bincount(pred.ravel().astype(np.int64))
    iou = inter / (size_t[pairs[0]] + size_p[pairs[1]] - inter) if inter.size else inter
    good = iou >= threshold
    matched_t = np.zeros(size_t.size, bool)
    matched_p = np.zeros(size_p.size, bool)
    matched_t[pairs[0][good]] = True
    matched_p[pairs[1][good]] = True
    out = np.zeros(pred.shape, np.uint8)
    out[(truth > 0) & ~matched_t[truth]] = 2
    out[(pred > 0) & ~matched_p[pred]] = 3
    out[(pred > 0) & matched_p[pred]] = 1
    return out, scores
