"""Shared test configuration: `@pytest.mark.root` tests skip with the reason when root/netns are missing."""

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
