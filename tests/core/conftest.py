"""Fixtures shared by the core tests: no network, and importing a module from a file."""

from __future__ import annotations

import importlib.util
import socket
import sys

import pytest


@pytest.fixture
def offline(monkeypatch):
    """Network connections fail; the test fails at teardown if any was attempted (even one
    that the library caught and turned into a warning)."""
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if args else kwargs)
        raise OSError("network access is disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield attempts
    assert not attempts, f"network access attempted: {attempts}"


def _import_file(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


@pytest.fixture
def import_file():
    """``import_file(path, name)``: the module of a Python file (e.g. a package's architecture)."""
    return _import_file
