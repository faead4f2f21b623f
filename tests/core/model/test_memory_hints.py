"""A memory refusal suggests settings that fit: every suggestion, applied as written with the
rest unchanged, passes the same check (hypothesis over networks, tiles, batches and limits)."""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
