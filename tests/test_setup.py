"""`make demo` sets up only what namespaces need; VMs are `make setup-vm`, whose libvirt step says what it will
change on the machine before it changes anything (dry runs: nothing is installed or changed here)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")


def make_n(target: str) -> str:
    res = subprocess.run(["make", "-n", "-B", target], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_make_demo_installs_only_what_namespaces_need():
    demo = make_n("demo")
    assert "scripts/setup-system.sh" in demo and "scripts/demo.sh" in demo
    assert "setup-libvirt" not in demo and ".[dev,vm]" not in demo


def test_make_setup_vm_and_make_test_set_up_vms_too():
    for target in ("setup-vm", "test"):
        out = make_n(target)
        assert "scripts/setup-system.sh" in out and "scripts/setup-libvirt.sh" in out and "-e '.[dev,vm]'" in out


def test_libvirt_is_an_extra_not_a_dependency():
    text = (REPO / "pyproject.toml").read_text()
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "libvirt" not in deps and 'vm = ["libvirt-python>=9.0"]' in text


def test_the_vm_setup_says_what_it_will_change_first(tmp_path):
    # a machine without libvirt: dpkg knows no package, there is no virsh, qemu.conf sets no user
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("dpkg-query", "virsh"):
        (fake / tool).write_text("#!/bin/sh\nexit 1\n")
        (fake / tool).chmod(0o755)
    conf = tmp_path / "qemu.conf"
    conf.write_text("# nothing set\n")
    res = subprocess.run([shutil.which("bash") or "/bin/bash", str(REPO / "scripts" / "setup-libvirt.sh")],
                         capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "SETUP_DRY_RUN": "1",
                              "QEMU_CONF": str(conf)})
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines[0] == "setup-libvirt: for VMs this changes the machine:"
    assert lines[1].startswith("setup-libvirt:   - install the Debian packages libvirt-daemon-system ")
    assert "mmdebstrap" in lines[1]
    assert lines[2] == ("setup-libvirt:   - keep libvirt's 'default' NAT network from autostarting (a fresh "
                        "install; labs never use it)")
    assert lines[3] == "setup-libvirt:   - start virtlogd and libvirtd"
    assert lines[4] == (f"setup-libvirt:   - time one libvirt define; only if it takes over 5 s, add user/group "
                        f"root to {conf} and restart libvirtd")
    assert len(lines) == 5 and conf.read_text() == "# nothing set\n"
