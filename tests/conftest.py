"""Shared test configuration: `@pytest.mark.root` tests skip with the reason when root/netns are missing;
the `store` fixture: a private state directory, and every lab made in it removed afterwards."""

from __future__ import annotations

import pytest

from tests.support.minilab import have_netns


def pytest_collection_modifyitems(config, items):
    ok, why = have_netns()
    if ok:
        return
    skip = pytest.mark.skip(reason=why)
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def store(tmp_path, monkeypatch):
    from orchestrator.lab import lifecycle
    from orchestrator.providers.state import StateStore

    monkeypatch.setenv("TESTBED_STATE_DIR", str(tmp_path / "state"))
    st = StateStore(tmp_path / "state")
    yield st
    lifecycle.down_all(store=st)
