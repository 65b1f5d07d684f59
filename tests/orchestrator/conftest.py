"""Fixtures for orchestrator tests: a private state directory, and every lab made in it removed afterwards."""

from __future__ import annotations

import pytest

from orchestrator import lab as core
from orchestrator.state import StateStore


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("TESTBED_STATE_DIR", str(tmp_path / "state"))
    st = StateStore(tmp_path / "state")
    yield st
    core.down_all(store=st)
