"""Fixtures of the libvirt tests: `far`, a hypervisor reached as root over SSH (tests/support/sshd.py: an sshd
of the test's own on 127.0.0.1) — the far side of qemu+ssh://root@127.0.0.1:PORT/system."""

from __future__ import annotations

import pytest

from tests.support.sshd import TestSshd


@pytest.fixture(scope="module")
def far(tmp_path_factory):
    d = TestSshd(tmp_path_factory.mktemp("far") / "sshd")
    yield d
    d.close()
