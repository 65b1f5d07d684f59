"""VMs on a remote hypervisor, and `testbed run --parallel` over two hypervisors (slow, root).

The lab lists qemu:///system and qemu+ssh://root@127.0.0.1:PORT/system, the `far` sshd of the test's own
(conftest.py; tests/support/sshd.py: own host key, own client key, pinned known_hosts, own sshd_config).
The far side is this machine, so both stand on one libvirtd — what differs is the path every call takes (the
URI, the ssh side channel), and the test checks nothing took the short cut of doing locally what must be done
there: the root user's own ~/.ssh is untouched, and `down` leaves nothing on either side.

Instance 2 is brought up on the far side first with `testbed up --hypervisor`: status, check clean,
`exec --via ssh` on every VM, out-of-band exec. Then `testbed run` (--parallel auto: one instance per
hypervisor) builds instance 1 on qemu:///system, reuses instance 2 where it stands, provisions both with
Ansible (instance 2 through the far side's admin-server namespace), and measures a trial on each; both agree
with the model and the records say where each ran. One lab up fewer than a remote test and a two-hypervisor
test apart, for the same evidence.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

import pytest

from tests.providers.libvirt.test_lab import LAB, WHY, leftovers, tb
from tests.support.sshd import why_no_sshd

pytestmark = pytest.mark.slow
WHY_NOT = WHY or why_no_sshd()
if WHY_NOT:
    pytestmark = [pytest.mark.slow, pytest.mark.skip(reason=WHY_NOT)]


def _root_ssh() -> dict[str, float]:
    home = Path(os.path.expanduser("~root")) / ".ssh"
    return {p.name: p.stat().st_mtime for p in home.iterdir()} if home.is_dir() else {}


def test_a_remote_hypervisor_then_two_lab_instances_on_two_hypervisors(far, tmp_path):
    from orchestrator.experiment.rundir import RunDir
    from orchestrator.providers.libvirt import images
    images.build("debian")
    env = {**os.environ, "TESTBED_STATE_DIR": str(tmp_path / "state"),
           "TESTBED_BOOT_TIMEOUT": os.environ.get("TESTBED_BOOT_TIMEOUT", "420")}
    before = _root_ssh()
    name = f"vh{secrets.token_hex(3)}"
    remote = f"{name}-2"
    text = LAB.read_text().replace("name: vm-stopping-speed", f"name: {name}")
    assert "  uri: qemu:///system" in text
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(text.replace("  uri: qemu:///system", f"  uris: ['qemu:///system', '{far.uri()}']"))
    exp = tmp_path / "exp.yaml"
    exp.write_text(json.dumps({
        "experiment": "vm-two-hv", "lab": str(lab_file), "rates": [20, 10], "timeout_s": 60,
        "worm": {"scan": "198.18.9.0/24", "protocols": ["tcp"], "lifetime_s": 90}}))
    try:
        t0 = time.monotonic()
        up = tb(env, "up", str(lab_file), "--name", remote, "--hypervisor", far.uri())
        assert f"lab {remote} is up" in up.stdout
        up_s = time.monotonic() - t0
        st = json.loads(tb(env, "status", remote, "--json").stdout)
        assert all(h["state"] == "up" for h in st["hosts"]), st      # the admin server's namespace is seen there
        assert any(far.uri() in n for n in st["notes"]), st["notes"]
        chk = tb(env, "check", remote, "--json", check=False)
        assert chk.returncode == 0, chk.stdout + chk.stderr
        for h in ("gateway", "blade", "sniffer", "injector"):
            ssh = tb(env, "exec", remote, h, "--via", "ssh", "--", "hostname", check=False)
            assert ssh.returncode == 0 and ssh.stdout.strip() == h, ssh.stderr
        oob = tb(env, "exec", remote, "blade", "--", "ip", "-4", "-o", "addr", "show", "exp0", check=False)
        assert oob.returncode == 0 and "198.18.8." in oob.stdout, oob.stderr

        t1 = time.monotonic()
        run = tb(env, "run", str(exp), "--out", str(tmp_path / "run"), "--index", str(tmp_path / "i.sqlite"),
                 timeout=1200)         # --parallel auto: one instance per hypervisor
        took = time.monotonic() - t1
        out = run.stdout + run.stderr
        assert (f"2 lab instances on 2 hypervisor(s): qemu:///system: {name}; "
                f"{far.uri().split('?')[0]}: {remote}") in out, out[-3000:]
        assert f"using lab {remote}, which is already up" in out, out[-3000:]
        rd = RunDir(tmp_path / "run")
        man = rd.manifest()
        assert man["status"] == "complete" and man["parallel"]["hypervisors"] == {
            name: "qemu:///system", remote: far.uri()}
        assert "lost" not in man["parallel"], man["parallel"]
        trials = rd.trials()
        assert {t["lab_instance"]: t["hypervisor"] for t in trials} == man["parallel"]["hypervisors"], trials
        for t in trials:
            assert t["status"] == "ok" and t["measured"]["blocked"] and t["agreement"]["ok"], t
            assert t["measured"]["out_after_block"] == 0, t
        print(f"\nremote VM lab up to SSH-ready in {up_s:.1f} s; two VM lab instances on two hypervisors: the run "
              f"{took:.0f} s; "
              + "; ".join(f"{t['trial']} on {t['hypervisor'].split('?')[0]}: stop {t['measured']['stop_s']:.3f} s "
                          f"(model {t['model']['stop_s']:.3f} s)" for t in trials))
    finally:
        for lab in (name, remote):
            tb(env, "down", lab, check=False)
    assert leftovers(name, env["TESTBED_STATE_DIR"]) == [] and leftovers(remote, env["TESTBED_STATE_DIR"]) == []
    assert _root_ssh() == before          # nothing of this machine's own SSH configuration was used or changed
