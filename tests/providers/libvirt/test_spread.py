"""A worm spread across four VM blades (slow, root; issue 16): labs/vm-spread.yaml under a name of the test's
own, labs/vm-spread-run.yaml on it — unthrottled, every blade infected, each infection confirmed on the
sniffer VM's capture, t_all inside the spread model's band; with the reference throttle on every blade the
spread stops at the initial blade; then `down` leaves nothing of the lab. Skips with the reason where libvirt,
QEMU or root are missing (the checks of test_lab.py).
"""

from __future__ import annotations

import csv
import json
import os
import secrets
import time
from pathlib import Path

import pytest
import yaml

from orchestrator.experiment.spreadrun import START_DELAY_S
from tests.providers.libvirt.test_lab import WHY, leftovers, tb
from testworm.addrs import AddressSet, ip_int
from testworm.strategies import make_targets

REPO = Path(__file__).resolve().parents[3]
LAB = REPO / "labs" / "vm-spread.yaml"
EXP = REPO / "labs" / "vm-spread-run.yaml"
BLADES = ["blade1", "blade2", "blade3", "blade4"]
ADDR = {b: f"198.18.8.{i}" for i, b in enumerate(BLADES, start=2)}

pytestmark = [pytest.mark.slow, pytest.mark.root]
if WHY:
    pytestmark = [pytest.mark.slow, pytest.mark.root, pytest.mark.skip(reason=WHY)]


def test_a_spread_across_four_vm_blades(tmp_path):
    from orchestrator.experiment.rundir import RunDir
    from orchestrator.providers.libvirt import images

    images.build("debian")          # cached after the first build
    state = tmp_path / "state"
    env = {**os.environ, "TESTBED_STATE_DIR": str(state),
           "TESTBED_BOOT_TIMEOUT": os.environ.get("TESTBED_BOOT_TIMEOUT", "420")}
    name = f"vs{secrets.token_hex(3)}"
    lab_file = tmp_path / "vm-spread.yaml"
    lab_file.write_text(LAB.read_text().replace("name: vm-spread\n", f"name: {name}\n"))
    spec = yaml.safe_load(EXP.read_text()) | {"lab": str(lab_file)}
    exp = tmp_path / "exp.yaml"
    exp.write_text(json.dumps(spec))
    out = tmp_path / "run"
    t0 = time.monotonic()
    try:
        up = tb(env, "up", str(lab_file), timeout=1200)
        assert f"lab {name} is up" in up.stdout
        up_s = time.monotonic() - t0
        run = tb(env, "run", str(exp), "--out", str(out), "--index", str(tmp_path / "i.sqlite"), timeout=1800)
        assert f"using lab {name}, which is already up" in run.stderr
        run_s = time.monotonic() - t0 - up_s
    finally:
        t1 = time.monotonic()
        tb(env, "down", name, check=False)
        down_s = time.monotonic() - t1
    assert leftovers(name, str(state), LAB) == []

    trials = {t["deploy"]: t for t in RunDir(out).trials()}
    assert sorted(trials) == ["0", "1"]
    free, held = trials["0"], trials["1"]
    print(f"\nVM spread: up {up_s:.1f} s, run {run_s:.1f} s, down {down_s:.1f} s")
    for t in (free, held):
        print(json.dumps({k: t.get(k) for k in ("trial", "status", "reason", "measured", "model", "agreement",
                                                "findings", "phases")}, default=str))
    for t in (free, held):
        assert t["status"] == "ok", {k: t.get(k) for k in ("trial", "status", "reason", "error", "died")}
        # no gateway: a blade marked the end of the capture (the injector had left the LAN), seen in the file
        for cap in t["capture"].values():
            end = cap["canary"]["end"]
            assert end["src"] in BLADES and end["dst"] == "198.18.8.255" and cap["end_seen_s"] is not None, cap

    # unthrottled: every blade falls, each infection seen on the wire, the times inside the model's band
    m = free["measured"]
    assert free["reason"] == "every vulnerable host was infected"
    assert m["infected_final"] == 4 and m["confirmed_on_wire"] == 4, m
    assert free["findings"] == []
    rows = list(csv.DictReader((out / free["files"]["infections"]).open()))
    assert sorted(r["host"] for r in rows) == BLADES
    assert all(r["confirmed_on_wire"] == "True" for r in rows), rows
    assert {r["by"] for r in rows if r["host"] == "blade1"} == {"injector"}
    assert {r["by"] for r in rows if r["host"] != "blade1"} <= set(BLADES)
    # the draw is exact: each blade that blade1 infected fell at its place in blade1's seeded order over the
    # rate, after blade1's start-up (seed 1 + trial 0: blade2, blade4, blade3 are its 9th, 102nd, 111th address)
    assert m["first_place"] == 8
    order = list(make_targets("random", AddressSet.from_cidrs([spec["worm"]["scan"]]), seed=spec["seed"],
                              own=ip_int(ADDR["blade1"])))
    for r in rows:
        if r["by"] == "blade1":
            at = m["start_up_s"] + order.index(ip_int(ADDR[r["host"]])) / spec["rates"][0]
            assert abs(float(r["infected_at_s"]) - at) < 0.5, (r, at)
    # the model: t_50 inside its band; t_all too, or above it by no more than the start-up the model leaves out
    # (0.15 s, measured on namespaces; TCG guests take seconds to start a scanner: docs/spread.md "On VMs")
    band = free["agreement"]["band"]
    assert free["agreement"]["checks"]["t_50_s"], free["agreement"]
    if not free["agreement"]["checks"]["t_all_s"]:
        over = m["t_all_s"] - band["t_all_s"][1]
        assert 0 < over <= (m["start_up_s"] - START_DELAY_S) * m["generations"], (m, band)

    # the reference throttle on every blade: blade1 is blocked and nothing else falls (seed 1, trial 1: its
    # first blade is the 78th address of its order, far beyond what the throttle releases before the block)
    h = held["measured"]
    assert held["carriers"] == BLADES
    assert h["infected_final"] == 1 and h["t_first_s"] is None, h
    assert "blade1" in h["blocked"] and 0 < h["blocked"]["blade1"] < 30, h
    assert held["agreement"]["ok"], held["agreement"]
