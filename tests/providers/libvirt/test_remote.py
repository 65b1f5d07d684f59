"""The VM lab on a remote hypervisor (slow): everything through qemu+ssh://root@127.0.0.1:PORT/system to an sshd
of the test's own (the `far` fixture, conftest.py; tests/support/sshd.py: own host key, own client key, pinned
known_hosts, own sshd_config).

The far side is this machine, so the test also checks that nothing took the short cut of doing locally what
must be done there: the root user's own ~/.ssh is untouched, and `down` leaves nothing on the far side.
up → check clean → `exec --via ssh` on every VM → one trial (provisioned with Ansible through the far side's
admin-server namespace) → down → no leftovers.
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


def test_vm_lab_on_a_remote_hypervisor(far, tmp_path):
    from orchestrator.providers.libvirt import images
    images.build("debian")
    env = {**os.environ, "TESTBED_STATE_DIR": str(tmp_path / "state"),
           "TESTBED_BOOT_TIMEOUT": os.environ.get("TESTBED_BOOT_TIMEOUT", "420")}
    before = _root_ssh()
    name = f"vr{secrets.token_hex(3)}"
    text = LAB.read_text().replace("name: vm-stopping-speed", f"name: {name}")
    assert "  uri: qemu:///system" in text
    text = text.replace("  uri: qemu:///system", f"  uri: '{far.uri()}'")
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(text)
    t0 = time.monotonic()
    up = tb(env, "up", str(lab_file))
    try:
        assert f"lab {name} is up" in up.stdout
        up_s = time.monotonic() - t0
        st = json.loads(tb(env, "status", name, "--json").stdout)
        assert all(h["state"] == "up" for h in st["hosts"]), st      # the admin server's namespace is seen there
        assert any(far.uri() in n for n in st["notes"]), st["notes"]
        chk = tb(env, "check", name, "--json", check=False)
        assert chk.returncode == 0, chk.stdout + chk.stderr
        for h in ("gateway", "blade", "sniffer", "injector"):
            ssh = tb(env, "exec", name, h, "--via", "ssh", "--", "hostname", check=False)
            assert ssh.returncode == 0 and ssh.stdout.strip() == h, ssh.stderr
        oob = tb(env, "exec", name, "blade", "--", "ip", "-4", "-o", "addr", "show", "exp0", check=False)
        assert oob.returncode == 0 and "198.18.8." in oob.stdout, oob.stderr

        exp = tmp_path / "exp.yaml"
        exp.write_text(json.dumps({
            "experiment": "vm-remote", "lab": str(lab_file), "rates": [20], "timeout_s": 60,
            "worm": {"scan": "198.18.9.0/24", "protocols": ["tcp"], "lifetime_s": 90}}))
        tb(env, "run", str(exp), "--out", str(tmp_path / "run"), "--index", str(tmp_path / "i.sqlite"),
           timeout=1200)
        from orchestrator.experiment.rundir import RunDir
        (t,) = RunDir(tmp_path / "run").trials()
        assert t["status"] == "ok" and t["measured"]["blocked"] and t["agreement"]["ok"], t
        assert t["measured"]["out_after_block"] == 0, t
        print(f"\nremote VM lab up to SSH-ready in {up_s:.1f} s; trial stop {t['measured']['stop_s']:.3f} s "
              f"(model {t['model']['stop_s']:.3f} s)")
    finally:
        t1 = time.monotonic()
        tb(env, "down", name)
        print(f"remote VM lab down in {time.monotonic() - t1:.1f} s")
    assert leftovers(name, env["TESTBED_STATE_DIR"]) == []
    assert _root_ssh() == before          # nothing of this machine's own SSH configuration was used or changed
