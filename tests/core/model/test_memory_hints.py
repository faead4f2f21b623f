"""A memory refusal suggests settings that fit: every suggestion, applied as written with the
rest unchanged, passes the same check (hypothesis over networks, tiles, batches and limits)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_unet.core.model import valid_input_shape
from napari_unet.core.model.memory import check_memory

_SETTING = re.compile(r"\b(tile|batch_size|base_channels|depth)=(\d+)")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=st.integers(1, 5), base=st.sampled_from([8, 16, 32, 64]),
       tile=st.integers(100, 3000), batch=st.integers(1, 8),
       limit_mb=st.integers(50, 4000), training=st.booleans())
def test_every_suggested_setting_fits(monkeypatch_env, depth, base, tile, batch, limit_mb,
                                      training):
    monkeypatch_env(f"{limit_mb}M")
    run = dict(in_channels=1, num_classes=2, depth=depth, base_channels=base, tile=tile,
               batch_size=batch, device="cpu", training=training)
    try:
        check_memory(**run)
    except ValueError as err:
        text = str(err)
    else:
        return
    hints = text.rpartition("available; ")[2].split("; or ")
    for hint in hints:
        changes = {k: int(v) for k, v in _SETTING.findall(hint)}
        if not changes:
            continue  # "free memory or use a smaller network": nothing smaller fits
        check_memory(**{**run, **changes})  # must not raise


_SETTING_ND = re.compile(r"\b(tile|batch_size|base_channels|depth)=(\d+(?:x\d+)*)")


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(depth=st.integers(1, 4), base=st.sampled_from([4, 8, 16, 32]),
       tile=st.tuples(st.integers(8, 120), st.integers(20, 300), st.integers(20, 300)),
       batch=st.integers(1, 6), limit_mb=st.integers(20, 3000), training=st.booleans())
def test_every_suggested_3d_setting_fits(monkeypatch_env, depth, base, tile, batch, limit_mb,
                                         training):
    """The same for a 3D U-Net, whose tile is one side per axis (written ``tile=DxHxW``)."""
    monkeypatch_env(f"{limit_mb}M")
    tile = tuple(int(v) for v in valid_input_shape(tile, depth))
    run = dict(in_channels=1, num_classes=2, depth=depth, base_channels=base, tile=tile,
               batch_size=batch, ndim=3, device="cpu", training=training)
    try:
        check_memory(**run)
    except ValueError as err:
        text = str(err)
    else:
        return
    for hint in text.rpartition("available; ")[2].split("; or "):
        changes = {k: tuple(int(s) for s in v.split("x")) if k == "tile" else int(v)
                   for k, v in _SETTING_ND.findall(hint)}
        assert changes or hint == "free memory or use a smaller network", hint
        if changes:
            check_memory(**{**run, **changes})  # must not raise


@pytest.fixture
def monkeypatch_env():
    """Set NAPARI_UNET_MEMORY_LIMIT inside hypothesis examples (a function-scoped
    monkeypatch would be shared between examples)."""
    import os

    before = os.environ.get("NAPARI_UNET_MEMORY_LIMIT")

    def set_limit(value: str) -> None:
        os.environ["NAPARI_UNET_MEMORY_LIMIT"] = value

    yield set_limit
    if before is None:
        os.environ.pop("NAPARI_UNET_MEMORY_LIMIT", None)
    else:
        os.environ["NAPARI_UNET_MEMORY_LIMIT"] = before
