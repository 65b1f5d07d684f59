"""Mechanisms side by side in one `testbed run` on a namespace lab (root, slow; small parameters): every
mechanism has wire figures; williamson and trw agree with their models; trw lets at most 10 attempts out with
the gateway answering RST; rate-limit's wire_rate is within 10 % of new_per_s; none is not contained and the
wire carries every attempt; a user's mechanism from a role written here (no event log, placement host) gets
its wire figures. Bad custom blocks fail with exit 2 before anything is built (no root needed)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.experiment.rundir import RunDir
from orchestrator.lab import lifecycle
from orchestrator.providers.state import StateStore

LABS = Path(__file__).resolve().parents[2] / "labs"
REPO = LABS.parent

# a user's mechanism: the first 3 new connections to the worm's port pass, every later one is dropped
START = ("iptables -N wt_mine && iptables -A wt_mine -m limit --limit 1/hour --limit-burst 3 -j RETURN && "
         "iptables -A wt_mine -j DROP && iptables -I OUTPUT -o {iface} -p {protocol} --syn --dport 8080 -j wt_mine")
STOP = ("iptables -D OUTPUT -o {iface} -p {protocol} --syn --dport 8080 -j wt_mine; iptables -F wt_mine; "
        "iptables -X wt_mine")


def user_role(tmp: Path) -> str:
    tasks = tmp / "roles" / "my-limiter" / "tasks"
    tasks.mkdir(parents=True)
    (tasks / "main.yml").write_text("- name: my-limiter needs iptables\n  ansible.builtin.command: iptables -V\n"
                                    "  changed_when: false\n")
    return "roles/my-limiter"


def experiment(tmp: Path, lab: Path | str, mechanisms: list, **over) -> Path:
    spec = {"experiment": "mechs", "lab": str(lab),
            "worm": {"port": 8080, "protocols": ["tcp"], "scan": "198.18.9.0/24", "max_attempts": 2000,
                     "lifetime_s": 8},
            "rates": [20], "repeats": 1, "timeout_s": 20, "quiet_s": 3, "mechanisms": mechanisms, **over}
    p = tmp / "exp.yaml"
    p.write_text(json.dumps(spec))
    return p


def cli(*args, timeout=900, **kw):
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, **kw)


@pytest.mark.parametrize("custom, why", [
    ({"role": "roles/absent", "start": "x", "stop": "y"}, "mechanisms.0.custom.role"),
    ({"role": "ROLE", "start": "x --on {interface}", "stop": "y"}, "unknown placeholder {interface}"),
])
def test_bad_custom_blocks_fail_before_anything_is_built(tmp_path, custom, why):
    state = tmp_path / "state"
    role = user_role(tmp_path)
    custom = {k: v.replace("ROLE", role) for k, v in custom.items()}
    exp = experiment(tmp_path, LABS / "stopping-speed.yaml", [{"name": "mine", "custom": custom}])
    r = cli("run", str(exp), "--out", str(tmp_path / "run"), "--index", str(tmp_path / "i.sqlite"),
            env=os.environ | {"TESTBED_STATE_DIR": str(state)}, timeout=120)
    assert r.returncode == 2 and why in r.stderr and "Traceback" not in r.stderr
    assert not (state / "labs").exists() and not (tmp_path / "run").exists()


@pytest.mark.root
@pytest.mark.slow
def test_every_mechanism_side_by_side_from_the_wire(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("needs root: builds a namespace lab")
    monkeypatch.setenv("TESTBED_STATE_DIR", str(tmp_path / "state"))
    name = f"m{secrets.token_hex(3)}"
    lab = tmp_path / "lab.yaml"
    lab.write_text((LABS / "stopping-speed.yaml").read_text().replace("name: stopping-speed", f"name: {name}"))
    mechs = [{"name": "williamson", "params": {"working_set_size": 5}},
             {"name": "trw"}, {"name": "rate-limit", "params": {"new_per_s": 2, "burst": 5}}, {"name": "none"},
             {"name": "my-limiter", "placement": "host",
              "custom": {"role": user_role(tmp_path), "start": START, "stop": STOP}}]
    exp = experiment(tmp_path, lab, mechs)
    out = tmp_path / "run"
    try:
        r = cli("run", str(exp), "--out", str(out), "--index", str(tmp_path / "i.sqlite"))
    finally:
        lifecycle.down_all(store=StateStore(tmp_path / "state"))
    assert r.returncode == 0, r.stderr[-3000:]
    trials = {t["mechanism"]: t for t in RunDir(out).trials()}
    assert list(trials) == ["williamson", "trw", "rate-limit", "none", "my-limiter"]
    for name, t in trials.items():
        assert t["status"] == "ok", (name, t.get("reason"))
        assert {"contained_s", "out_before_contained", "wire_rate"} <= set(t["measured"]), name
    w, trw, rl, none, mine = (trials[k]["measured"] for k in trials)
    assert trials["williamson"]["agreement"]["ok"] and w["contained"]
    assert trials["trw"]["agreement"]["ok"] and trw["contained"] and trw["out_before_contained"] <= 10
    lo, hi = trials["trw"]["agreement"]["model_out_range"]           # the answer-time window (mechanisms/trw)
    assert trials["trw"]["agreement"]["matched"]["out_before_block"] == trw["out_before_contained"]
    # on namespaces the window is narrow (the answers come back within the worm's next send): 8 out, model 8
    assert lo <= trw["out_before_contained"] <= hi and hi - lo <= 1, (lo, hi, trw)
    assert abs(rl["wire_rate"] - 2.0) <= 0.2 and trials["rate-limit"]["agreement"]["ok"]
    assert not none["contained"] and none["wire_attempts"] == none["attempts"]
    assert mine["contained"] and mine["out_before_contained"] == 3 and trials["my-limiter"]["agreement"] == {"ok": None}
