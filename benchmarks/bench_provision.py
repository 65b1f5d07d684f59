"""Provisioning speed: the 21-host paper testbed from scratch, then the idempotent re-run, time per role.

Targets (issue 6): first run ≤ 60 s on 2 cores, re-run ≤ 30 s. Each role is one task of the testbed_host
module (fewer, heavier tasks): the per-role figures show where the time goes. Also printed: how long after
`up` every host answers SSH. Run as root from the repository root: .venv/bin/python benchmarks/bench_provision.py
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.lab import lifecycle  # noqa: E402
from orchestrator.lab.provision import provision_lab  # noqa: E402
from orchestrator.lab.ssh import Access  # noqa: E402
from orchestrator.providers.state import StateStore  # noqa: E402


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("bench_provision: needs root")
    tmp = Path(tempfile.mkdtemp(prefix="wt-prov-"))
    os.environ["TESTBED_STATE_DIR"] = str(tmp / "state")
    store = StateStore(tmp / "state")
    name = f"bp{secrets.token_hex(2)}"
    try:
        t0 = time.monotonic()
        lab = lifecycle.up(REPO / "labs" / "paper-testbed.yaml", name=name, store=store)
        t_up = time.monotonic() - t0
        with Access(name, store) as acc:
            acc.wait_reachable(timeout=60)
        t_ssh = time.monotonic() - t0
        first = provision_lab(name, store=store)
        again = provision_lab(name, store=store)
        print(f"paper testbed, {len(lab.hosts)} hosts: up {t_up:.2f} s, every host answering SSH {t_ssh:.2f} s after start")
        for label, rep, target in (("first run", first, 60), ("re-run", again, 30)):
            roles = ", ".join(f"{r} {s:.1f} s" for r, s in rep.role_seconds.items())
            print(f"{label:<9} {rep.duration_s:5.1f} s (target ≤ {target} s) — {rep.total_changed} changes; per role: {roles}")
    finally:
        lifecycle.down_all(store=store)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
