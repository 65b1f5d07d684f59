"""Sizing the kernel's shared limits for namespace labs (pure arithmetic), and the machine-wide record that raises
them for the labs that are up and puts them back when the last one goes — on a fake /proc/sys, without root."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.atomic import atomic_write_json
from orchestrator.errors import ProviderError
from orchestrator.labfile.load import load_lab
from orchestrator.providers.netns import limits

LABS = Path(__file__).resolve().parents[3] / "labs"
GC3, GC2, PIDMAX, FILES = ("net.ipv4.neigh.default.gc_thresh3", "net.ipv4.neigh.default.gc_thresh2",
                           "kernel.pid_max", "fs.file-max")
LAB_200 = """\
name: big
lans:
  management: {subnet: 198.18.0.0/23}
  admin: {subnet: 198.18.2.0/23}
  experimental: {subnet: 198.18.8.0/22}
hosts:
  admin-server: {role: admin-server}
  gateway: {role: gateway}
  sniffer: {role: sniffer}
  injector: {role: injector}
  target: {role: target}
  blade: {role: blade, count: 195}
"""


def test_paper_testbed_needs_an_arp_entry_at_each_end_of_every_pair_on_a_lan():
    lab = load_lab(LABS / "paper-testbed.yaml")
    n = limits.needs(lab)
    # management: admin server + 16 blades; admin: all 21; experimental: 19 (the sniffer has no address there)
    assert n[GC3] == n[GC2] == 17 * 16 + 21 * 20 + 19 * 18 == 1034
    assert n[PIDMAX] == n["kernel.threads-max"] == n[limits.CGROUP_PIDS] == 21 * limits.PIDS_PER_HOST
    assert n[FILES] == 21 * limits.FILES_PER_HOST
    assert n["net.netfilter.nf_conntrack_max"] == 19 * limits.FLOWS_PER_HOST
    assert limits.open_files_needed(lab) == limits.BASE_FILES + 63


def test_a_200_host_lab_needs_far_more_than_the_kernels_default_1024(tmp_path):
    f = tmp_path / "big.yaml"
    f.write_text(LAB_200)
    n = limits.needs(load_lab(f))
    assert n[GC3] == 196 * 195 + 200 * 199 + 198 * 197 == 117_026


def R(value, in_use=None, writable=True, error=""):
    return limits.Reading(value, in_use, writable, error)


DEFAULTS = {GC3: R(1024), GC2: R(512), "net.netfilter.nf_conntrack_max": R(262144),
            PIDMAX: R(32768, in_use=300), "kernel.threads-max": R(192726, in_use=300), FILES: R(2_466_126, 700)}


def test_plan_raises_the_arp_table_by_what_every_lab_up_needs_above_the_machines_own():
    writes, short, notes = limits.plan({GC3: 1034, GC2: 1034}, [], DEFAULTS, {})
    assert writes == {GC3: 1024 + 1034, GC2: 512 + 1034} and not short and not notes
    # a second lab: the original allowance stays the machine's, both labs add theirs
    now = {**DEFAULTS, GC3: R(2058), GC2: R(1546)}
    writes, short, _ = limits.plan({GC3: 500, GC2: 500}, [{GC3: 1034, GC2: 1034}], now, {GC3: 1024, GC2: 512})
    assert writes == {GC3: 1024 + 1034 + 500, GC2: 512 + 1034 + 500}


def test_plan_leaves_alone_what_is_enough_and_counts_what_is_in_use_for_tasks_and_files():
    writes, short, _ = limits.plan({PIDMAX: 3200, FILES: 51200}, [], DEFAULTS, {})
    assert writes == {} and short == []
    tight = {**DEFAULTS, PIDMAX: R(32768, in_use=30000)}
    writes, short, _ = limits.plan({PIDMAX: 3200}, [], tight, {})
    assert writes == {PIDMAX: 33200} and short == []


def test_a_limit_that_cannot_be_raised_is_refused_with_the_figure_and_the_fix():
    ro = {**DEFAULTS, GC3: R(1024, writable=False, error="/proc/sys/net/ipv4/neigh/default/gc_thresh3 is read-only")}
    writes, short, _ = limits.plan({GC3: 117_026, GC2: 117_026}, [], ro, {})
    assert [s.key for s in short] == [GC3] and short[0].want == 118_050 and short[0].have == 1024
    err = limits.refusal("big", short)
    assert err.message == (
        "lab 'big' needs net.ipv4.neigh.default.gc_thresh3 ≥ 118050 (this machine's 1024 plus 117026 for this "
        "lab's ARP entries: every pair of hosts on a LAN they share); it is 1024 and it cannot be raised here "
        "(/proc/sys/net/ipv4/neigh/default/gc_thresh3 is read-only); nothing was built")
    assert err.hint == ("as root on this machine: sysctl -w net.ipv4.neigh.default.gc_thresh3=118050 — "
                        "or build a smaller lab")


def test_threads_max_and_the_cgroup_are_never_raised_only_refused():
    tight = {**DEFAULTS, "kernel.threads-max": R(3000, in_use=2900),
             limits.CGROUP_PIDS: R(1000, 900, False, "/sys/fs/cgroup/system.slice/pids.max")}
    writes, short, _ = limits.plan({"kernel.threads-max": 320, limits.CGROUP_PIDS: 320}, [], tight, {})
    assert writes == {}
    assert [(s.key, s.want, s.reason) for s in short] == [
        ("kernel.threads-max", 3220, "testbed does not raise it"),
        (limits.CGROUP_PIDS, 1220, "it belongs to the service manager (/sys/fs/cgroup/system.slice/pids.max)")]


def test_a_limit_that_cannot_be_read_is_noted_not_guessed():
    gone = {k: v for k, v in DEFAULTS.items() if k not in (GC3, "net.netfilter.nf_conntrack_max")}
    _, short, notes = limits.plan({GC3: 10, "net.netfilter.nf_conntrack_max": 10}, [], gone, {})
    assert short == [] and notes == [f"{GC3} could not be read (not read); this lab needs 10 of it"]


def test_release_restores_the_original_when_the_last_lab_goes_and_lowers_it_before():
    orig, ours = {GC3: 1024, PIDMAX: 32768}, {GC3: 3000, PIDMAX: 40000}
    writes, drop, notes = limits.release_plan(orig, ours, {GC3: 3000, PIDMAX: 40000}, [{GC3: 900}])
    assert writes == {GC3: 1924} and drop == [] and notes == []           # pid_max stays up while a lab is
    writes, drop, notes = limits.release_plan(orig, ours, {GC3: 3000, PIDMAX: 40000}, [])
    assert writes == {GC3: 1024, PIDMAX: 32768} and sorted(drop) == [PIDMAX, GC3]
    # someone changed it since: left alone, and forgotten
    writes, drop, notes = limits.release_plan(orig, ours, {GC3: 5000, PIDMAX: 40000}, [])
    assert writes == {PIDMAX: 32768} and GC3 in drop
    assert notes == [f"{GC3} is 5000, not the 3000 testbed set: left as it is"]
    # recorded but never written (the write failed, or up was killed first): nothing to put back
    writes, drop, notes = limits.release_plan({GC3: 1024}, {GC3: 3000}, {GC3: 1024}, [])
    assert writes == {} and drop == [GC3] and notes == []


# ---------------------------------------------------------------- the registry, on a fake /proc/sys


class FakeKernel(limits.Kernel):
    def __init__(self, root: Path, read_only: set[str] = frozenset()):
        super().__init__(root / "proc", root / "cgroup")
        self.read_only = read_only
        for key, r in DEFAULTS.items():
            self.write(key, r.value)
        self.write("fs.file-nr", 700)

    def write(self, key, value):
        p = self._path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"{value}\n")

    def reading(self, key):
        r = super().reading(key)
        return limits.Reading(r.value, r.in_use, key not in self.read_only, "read-only" if key in self.read_only else "")

    def tasks(self):
        return 300


def lab_record(state: Path, lab: str, claim: str | None) -> None:
    journal = [{"kind": "netns", "name": f"wt.{lab}.x"}] + ([{"kind": "kernel-limits", "name": claim}] if claim else [])
    atomic_write_json(state / "labs" / lab / "lab.json", {"name": lab, "journal": journal})


def claim(reg: limits.Registry, state: Path, lab: str, need: dict) -> str:
    with reg.locked():
        writes, _ = reg.check(lab, need)
        cid = reg.new_claim(lab)
        lab_record(state, lab, cid)                          # journalled first, as the provider does
        reg.acquire(cid, lab, state, need, writes)
    return cid


def test_labs_in_two_state_directories_share_the_record_and_the_last_one_out_restores(tmp_path):
    k = FakeKernel(tmp_path)
    reg = limits.Registry(tmp_path / "registry", k)
    a = claim(reg, tmp_path / "stateA", "a", {GC3: 1034, GC2: 1034})
    assert (k.read(GC3), k.read(GC2)) == (2058, 1546)
    b = claim(reg, tmp_path / "stateB", "b", {GC3: 2000, GC2: 2000})
    assert k.read(GC3) == 1024 + 1034 + 2000
    assert reg.state()["original"] == {GC3: 1024, GC2: 512}
    assert reg.release(a) == [f"{GC2} 3546 -> 2512", f"{GC3} 4058 -> 3024"]   # b still needs its share
    assert reg.release(b) == [f"{GC2} 2512 -> 512", f"{GC3} 3024 -> 1024"]
    assert (k.read(GC3), k.read(GC2)) == (1024, 512)
    assert reg.state() == {"original": {}, "set": {}, "claims": {}}


def test_a_claim_whose_lab_is_gone_is_dropped_and_what_it_raised_put_back(tmp_path):
    k = FakeKernel(tmp_path)
    reg = limits.Registry(tmp_path / "registry", k)
    claim(reg, tmp_path / "state", "a", {GC3: 100, GC2: 100})
    (tmp_path / "state" / "labs" / "a" / "lab.json").unlink()         # its state directory was removed by hand
    assert reg.settle() == [f"{GC2} 612 -> 512", f"{GC3} 1124 -> 1024"]
    assert reg.state()["claims"] == {}


def test_up_killed_after_its_journal_but_before_the_claim_leaves_nothing_standing(tmp_path):
    k = FakeKernel(tmp_path)
    reg = limits.Registry(tmp_path / "registry", k)
    lab_record(tmp_path / "state", "a", "a-deadbeef")                  # journalled, then SIGKILL
    assert reg.release("a-deadbeef") == [] and k.read(GC3) == 1024


def test_a_refusal_claims_nothing_and_changes_nothing(tmp_path):
    k = FakeKernel(tmp_path, read_only={GC3})
    reg = limits.Registry(tmp_path / "registry", k)
    with pytest.raises(ProviderError, match=r"needs net.ipv4.neigh.default.gc_thresh3 ≥ 118050 .* cannot be raised"):
        with reg.locked():
            reg.check("big", {GC3: 117_026, GC2: 117_026})
    assert reg.state() == {"original": {}, "set": {}, "claims": {}} and k.read(GC2) == 512


def test_the_tightest_cgroup_pids_limit_is_read_from_v2(tmp_path, monkeypatch):
    k = FakeKernel(tmp_path)
    cg = tmp_path / "cgroup"
    for d, mx, cur in ((cg / "user.slice", "800", "500"), (cg / "user.slice" / "s", "max", "20")):
        d.mkdir(parents=True, exist_ok=True)
        (d / "pids.max").write_text(mx + "\n")
        (d / "pids.current").write_text(cur + "\n")
    real = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **kw: "0::/user.slice/s\n"
                        if str(self) == "/proc/self/cgroup" else real(self, *a, **kw))
    r = k.cgroup_pids()
    assert (r.value, r.in_use, r.error) == (800, 500, str(cg / "user.slice" / "pids.max"))
