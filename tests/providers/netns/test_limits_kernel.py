"""The kernel's shared limits on real namespace labs (root): `up` raises what the lab needs with a record in its
journal and the machine-wide registry, `down` puts it back when no lab needs it, a SIGKILLed `up` is undone by
`down`, a limit that cannot be raised is refused before anything is built — and a 200-host lab checks clean.

Other labs (other state directories, other test runs) may be up on this machine at the same time: the figures
asserted are the ones this lab is owed, whatever the others claim."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator.errors import ProviderError
from orchestrator.lab import lifecycle
from orchestrator.labfile.load import load_lab
from orchestrator.providers.netns import limits, namespaces
from orchestrator.providers.netns.provider import NetnsProvider
from tests.providers.netns.test_limits import LAB_200

LABS = Path(__file__).resolve().parents[3] / "labs"
REPO = LABS.parent
GC3 = "net.ipv4.neigh.default.gc_thresh3"
pytestmark = pytest.mark.root


def uniq() -> str:
    return f"t{secrets.token_hex(3)}"


def claims_of(name: str) -> list[str]:
    return [c for c, d in limits.Registry().state()["claims"].items() if d["lab"] == name]


def owed() -> int:
    """What gc_thresh3 must be now: the machine's own allowance plus every standing claim."""
    st = limits.Registry().state()
    base = st["original"].get(GC3, limits.Kernel().read(GC3))
    return base + sum(c["needs"][GC3] for c in st["claims"].values())


def test_up_raises_what_the_lab_needs_with_a_record_and_down_puts_it_back(store):
    name = uniq()
    lab = lifecycle.up(LABS / "paper-testbed.yaml", name=name, store=store)
    need = limits.needs(lab)[GC3]
    rec = store.load(name)
    [claim] = rec.owns("kernel-limits")                           # in the lab's own journal
    assert rec.extra["kernel_limits"]["needs"][GC3] == need == 1034
    assert claims_of(name) == [claim]
    assert limits.Kernel().read(GC3) >= owed() >= need        # its share, on top of the machine's own allowance
    lifecycle.down(name, store=store)
    assert claims_of(name) == []
    st = limits.Registry().state()
    if not st["claims"]:                                           # the last lab out restores the original
        assert GC3 not in st["original"] and limits.Kernel().read(GC3) < need
    else:
        assert limits.Kernel().read(GC3) >= owed()


def test_a_sigkilled_up_is_undone_by_down(store):
    name = uniq()
    p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "up", str(LABS / "paper-testbed.yaml"),
                          "--name", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                         env={**os.environ, "TESTBED_FAULT_PAUSE": "after-netns"})
    try:
        assert p.stdout.readline().strip() == "fault-pause:after-netns"
        assert len(claims_of(name)) == 1 and limits.Kernel().read(GC3) >= owed()
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", "down", name], capture_output=True, text=True,
                         cwd=REPO, timeout=60)
    assert res.returncode == 0, res.stderr
    assert claims_of(name) == [] and store.load(name) is None
    assert limits.Kernel().read(GC3) >= owed()


def test_a_limit_that_cannot_be_raised_refuses_the_lab_before_anything_is_built(store, tmp_path):
    have = 1024

    class ReadOnlyNeighbours(limits.Kernel):
        def reading(self, key):
            r = super().reading(key)
            if key != GC3:
                return r
            return limits.Reading(have, r.in_use, False, f"{key} is read-only here")   # fixed: other labs may move it

    prov = NetnsProvider(store, limits=limits.Registry(tmp_path / "registry", ReadOnlyNeighbours()))
    f = tmp_path / "big.yaml"
    f.write_text(LAB_200.replace("name: big", f"name: {uniq()}"))
    lab = load_lab(f)
    with pytest.raises(ProviderError) as exc:
        prov.create(lab)
    assert exc.value.message.startswith(f"lab '{lab.name}' needs {GC3} ≥ {have + 117_026} (this machine's {have} "
                                        "plus 117026 for this lab's ARP entries")
    assert f"it is {have} and it cannot be raised here ({GC3} is read-only here); nothing was built" in exc.value.message
    assert exc.value.hint.startswith(f"as root on this machine: sysctl -w {GC3}={have + 117_026}")
    assert not [n for n in namespaces.list_netns() if n.startswith(f"wt.{lab.name}.")]
    assert store.load(lab.name) is None


@pytest.mark.slow
def test_a_200_host_lab_comes_up_and_checks_clean(store, tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text(LAB_200.replace("name: big", f"name: {uniq()}"))
    lab = lifecycle.up(f, store=store)
    NetnsProvider(store).wait_booted(lab.name, timeout=120)
    rep = lifecycle.check(lab.name, store=store)
    assert rep.ok, [(p.host, p.check, p.detail) for p in rep.problems][:10]
    assert len({f.host for f in rep.findings}) == 200
    frames = [f for f in rep.findings if f.check == "isolation" and "frames to control addresses" in f.detail]
    assert len(frames) == 198                     # every host with an experimental address sent its frames
