"""`testbed run --parallel 2` on a VM lab that lists two hypervisors (slow, root): qemu:///system and
qemu+ssh://root@127.0.0.1:PORT/system through the `far` sshd of the test's own (conftest.py). Instance 1 is
built, provisioned, measured and taken down on the first, instance 2 on the second (its record, manifest and
trial say so); both trials agree with the model; nothing of either lab is left. The far side is this machine,
so both stand on one libvirtd — what differs is the path every call takes (the URI, the ssh side channel).
"""

from __future__ import annotations

import json
import os
import secrets
import time

import pytest

from tests.providers.libvirt.test_lab import LAB, WHY, leftovers, tb
from tests.support.sshd import why_no_sshd

pytestmark = pytest.mark.slow
WHY_NOT = WHY or why_no_sshd()
if WHY_NOT:
    pytestmark = [pytest.mark.slow, pytest.mark.skip(reason=WHY_NOT)]


def test_two_lab_instances_on_two_hypervisors(far, tmp_path):
    from orchestrator.experiment.rundir import RunDir
    from orchestrator.providers.libvirt import images
    images.build("debian")
    env = {**os.environ, "TESTBED_STATE_DIR": str(tmp_path / "state"),
           "TESTBED_BOOT_TIMEOUT": os.environ.get("TESTBED_BOOT_TIMEOUT", "420")}
    name = f"vh{secrets.token_hex(3)}"
    text = LAB.read_text().replace("name: vm-stopping-speed", f"name: {name}")
    assert "  uri: qemu:///system" in text
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(text.replace("  uri: qemu:///system", f"  uris: ['qemu:///system', '{far.uri()}']"))
    exp = tmp_path / "exp.yaml"
    exp.write_text(json.dumps({
        "experiment": "vm-two-hv", "lab": str(lab_file), "rates": [20, 10], "timeout_s": 60,
        "worm": {"scan": "198.18.9.0/24", "protocols": ["tcp"], "lifetime_s": 90}}))
    t0 = time.monotonic()
    try:
        run = tb(env, "run", str(exp), "--out", str(tmp_path / "run"), "--index", str(tmp_path / "i.sqlite"),
                 timeout=1200)         # --parallel auto: one instance per hypervisor
        took = time.monotonic() - t0
        out = run.stdout + run.stderr
        assert (f"2 lab instances on 2 hypervisor(s): qemu:///system: {name}; "
                f"{far.uri().split('?')[0]}: {name}-2") in out, out[-3000:]
        rd = RunDir(tmp_path / "run")
        man = rd.manifest()
        assert man["status"] == "complete" and man["parallel"]["hypervisors"] == {
            name: "qemu:///system", f"{name}-2": far.uri()}
        assert "lost" not in man["parallel"], man["parallel"]
        trials = rd.trials()
        assert {t["lab_instance"]: t["hypervisor"] for t in trials} == man["parallel"]["hypervisors"], trials
        for t in trials:
            assert t["status"] == "ok" and t["measured"]["blocked"] and t["agreement"]["ok"], t
        print(f"\ntwo VM lab instances on two hypervisors: the run {took:.0f} s; "
              + "; ".join(f"{t['trial']} on {t['hypervisor'].split('?')[0]}: stop {t['measured']['stop_s']:.3f} s "
                          f"(model {t['model']['stop_s']:.3f} s)" for t in trials))
    finally:
        for lab in (name, f"{name}-2"):
            tb(env, "down", lab, check=False)
    assert leftovers(name, env["TESTBED_STATE_DIR"]) == [] and leftovers(f"{name}-2", env["TESTBED_STATE_DIR"]) == []
