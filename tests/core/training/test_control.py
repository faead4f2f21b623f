"""Stop, pause and resume requests from another thread act on a waiting run."""

from __future__ import annotations

import threading

import pytest

from napari_unet.core.training.control import RunControl


@pytest.mark.parametrize("release", ["request_resume", "request_stop"])
def test_a_paused_run_waits_until_resumed_or_stopped(release):
    control = RunControl()
    control.request_pause()
    assert control.paused and not control.stopped
    waiting = threading.Thread(target=control.wait_for_resume, kwargs={"poll_s": 0.01})
    waiting.start()
    waiting.join(timeout=0.2)
    assert waiting.is_alive()  # still paused
    getattr(control, release)()
    waiting.join(timeout=10.0)
    assert not waiting.is_alive() and not control.paused
    assert control.stopped == (release == "request_stop")


def test_a_pause_after_a_stop_is_no_pause():
    control = RunControl()
    control.request_stop()
    control.request_pause()
    assert control.stopped and not control.paused
