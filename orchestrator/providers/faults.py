"""Test seams every provider's `create` shares: stop, or fail, at a named step (for the tests that kill or
break `testbed up` half-way and check that `down` still removes everything)."""

from __future__ import annotations

import os
import time

from orchestrator.errors import ProviderError


def fault(step: str) -> None:
    """TESTBED_FAULT_PAUSE=<step> makes `up` stop here (for SIGKILL-during-up tests); TESTBED_FAULT_FAIL=<step>
    makes it fail here."""
    if os.environ.get("TESTBED_FAULT_PAUSE") == step:
        print(f"fault-pause:{step}", flush=True)
        time.sleep(120)
    if os.environ.get("TESTBED_FAULT_FAIL") == step:
        raise ProviderError(f"injected failure at step '{step}' (TESTBED_FAULT_FAIL)")
