"""docs/nightly.md's recipe, run for real: baseline, a clean comparison, and a regression that fails the gate."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from orchestrator.experiment.rundir import RunDir
from orchestrator.lab import lifecycle
from orchestrator.providers.state import StateStore

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.root, pytest.mark.slow]


def test_nightly_recipe(tmp_path):
    name = f"n{secrets.token_hex(3)}"
    lab = tmp_path / "lab.yaml"
    lab.write_text((REPO / "labs" / "stopping-speed.yaml").read_text().replace("name: stopping-speed", f"name: {name}"))
    exp = tmp_path / "tiny.yaml"
    exp.write_text(json.dumps({"experiment": "tiny-nightly", "lab": str(lab), "rates": [1000], "timeout_s": 20,
                               "worm": {"scan": "198.18.9.0/24", "protocols": ["tcp"], "lifetime_s": 60}}))
    env = {**os.environ, "RESULTS": str(tmp_path / "nightly"), "TESTBED_STATE_DIR": str(tmp_path / "state")}

    def nightly(**extra):
        return subprocess.run(["bash", "scripts/nightly.sh", str(exp)], cwd=REPO, capture_output=True, text=True,
                              env={**env, **extra}, timeout=300)
    try:
        first = nightly()
        assert first.returncode == 0, first.stderr[-2000:]
        assert "no earlier complete run of 'tiny-nightly' to compare with; this run is the baseline" in first.stdout
        latest = (tmp_path / "nightly" / "latest").resolve()
        assert (latest / "junit.xml").is_file() and (latest / "report.html").is_file()

        second = nightly()
        assert second.returncode == 0, second.stderr[-2000:]
        assert "0 regression(s)" in second.stdout
        assert (tmp_path / "nightly" / "latest").resolve() != latest

        # a baseline whose worm was stopped ten times faster makes tonight a regression
        fake = tmp_path / "fast-baseline"
        shutil.copytree(latest, fake)
        run = RunDir(fake)
        trials = run.trials()
        # an errored trial has no figures (no "measured"): say which and why, not a KeyError
        assert [(t["trial"], t["status"], t.get("reason")) for t in trials if "measured" not in t] == []
        for t in trials:
            t["measured"]["stop_s"] /= 10
        run.write_trials(trials)
        third = nightly(BASELINE=str(fake))
        assert third.returncode == 1
        assert "regression" in third.stdout and "1 regression(s)" in third.stdout
    finally:
        lifecycle.down_all(store=StateStore(tmp_path / "state"))
