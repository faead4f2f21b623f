"""Fixtures shared by the command-line tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def error_line(capsys):
    """``error_line()``: the last line the command wrote to stderr, checking that no traceback
    came with it (a CLI error is one clear line)."""

    def last() -> str:
        err = capsys.readouterr().err.strip().splitlines()
        assert "Traceback" not in "\n".join(err)
        return err[-1]

    return last
