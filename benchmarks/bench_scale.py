"""What one machine holds: a 1,000-host namespace lab up, checked and down beside a 200-host one in the same run,
and VMs per GiB under software emulation (issue 18 §4).

For each namespace lab (one run each; `--hosts` sets the large one): wall time of `up` (wired), of boot (every
host's sshd listening), of `testbed check` and its result, and of `down`; the machine's peak memory in use
above the baseline before the lab (MemTotal − MemAvailable, sampled every 0.2 s: the kernel's namespaces,
links and neighbour tables as well as the processes), the peak of the kernel's own slab, the peak count of
ARP entries machine-wide (/proc/net/stat/arp_cache, the kernel's count, not ours) against the lab's kernel
limit claim (limits.needs), and the orchestrator's own peak RSS. With `--vm`: one VM (the debian image, the
lab's memory and translation-cache sizes) up to SSH-ready, then its QEMU's RSS and PSS (/proc, not QEMU's
word) after `--settle` seconds, and VMs per GiB from that.

Other engineers' programs share the machine: run it under the lock. Root, from the repository root:
    flock /tmp/wt-heavy.lock .venv/bin/python benchmarks/bench_scale.py [--hosts 1000] [--vm]
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import resource
import secrets
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from orchestrator.lab import lifecycle  # noqa: E402
from orchestrator.labfile.load import load_lab  # noqa: E402
from orchestrator.providers.netns import limits  # noqa: E402
from orchestrator.providers.netns.provider import NetnsProvider  # noqa: E402
from orchestrator.providers.state import StateStore  # noqa: E402

MAX_HOSTS = 4000          # a bound on what this script will try (the experimental LAN is sized to fit)


def lab_yaml(name: str, blades: int) -> str:
    """The 200-host lab of bench_netns.py, grown: five roles and `blades` blades, each LAN sized to fit."""
    hosts = blades + 5
    prefix = 32 - max(8, (2 * hosts).bit_length())     # room to spare, as bench_netns.py leaves
    size = 1 << (32 - prefix)
    base = ipaddress.ip_network("198.18.0.0/15")
    mgmt, admin, exp = (ipaddress.ip_network((int(base.network_address) + k * size, prefix)) for k in (1, 2, 3))
    assert all(n.subnet_of(base) for n in (mgmt, admin, exp))
    return (f"name: {name}\nlans:\n  management: {{subnet: {mgmt}}}\n  admin: {{subnet: {admin}}}\n"
            f"  experimental: {{subnet: {exp}}}\nhosts:\n  admin-server: {{role: admin-server}}\n"
            "  gateway: {role: gateway}\n  sniffer: {role: sniffer}\n  injector: {role: injector}\n"
            f"  target: {{role: target}}\n  blade: {{role: blade, count: {blades}}}\n")


def meminfo() -> dict[str, int]:
    out = {}
    for ln in Path("/proc/meminfo").read_text().splitlines():
        k, v = ln.split(":", 1)
        out[k] = int(v.split()[0]) * 1024
    return out


def arp_entries() -> int:
    # the first column of the first data row is the neighbour table's entry count (hex): one table for every
    # namespace. Read through PID 1 — /proc/net follows the reading thread, which the provider may move.
    rows = Path("/proc/1/net/stat/arp_cache").read_text().splitlines()
    return int(rows[1].split()[0], 16)


class Peak:
    """Samples memory in use, slab and ARP entries every `every` s until stopped; keeps the peaks."""

    def __init__(self, every: float = 0.2):
        m = meminfo()
        self.base_used = m["MemTotal"] - m["MemAvailable"]
        self.base_slab = m["Slab"]
        self.used = self.slab = self.arp = 0
        self.phase = 0               # the peak of memory in use since the last mark()
        self.errors: list[str] = []
        self.every = every
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, daemon=True)
        self._t.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                m = meminfo()
                used = m["MemTotal"] - m["MemAvailable"] - self.base_used
                self.used, self.phase = max(self.used, used), max(self.phase, used)
                self.slab = max(self.slab, m["Slab"] - self.base_slab)
                self.arp = max(self.arp, arp_entries())
            except (OSError, ValueError, IndexError, KeyError) as exc:
                self.errors.append(str(exc))     # reported: a sample lost is said, not hidden

    def mark(self) -> int:
        """The peak of memory in use since the last mark (or the start), sampled once more now; then reset."""
        m = meminfo()
        out = max(self.phase, m["MemTotal"] - m["MemAvailable"] - self.base_used)
        self.phase = 0
        return out

    def stop(self) -> None:
        self._stop.set()
        self._t.join(5)


def measure_lab(tmp: Path, store: StateStore, blades: int) -> dict:
    name = f"sc{secrets.token_hex(3)}"
    f = tmp / f"{name}.yaml"
    f.write_text(lab_yaml(name, blades))
    lab = load_lab(f, machine_routes=[])
    claim = limits.needs(lab)
    arp0 = arp_entries()
    peak = Peak()
    out: dict = {"hosts": len(lab.hosts), "claim": claim, "arp_before": arp0}
    try:
        t0 = time.perf_counter()
        lifecycle.up(f, name=name, store=store)
        t1 = time.perf_counter()
        NetnsProvider(store).wait_booted(name, timeout=600)
        t2 = time.perf_counter()
        out["mem_up"] = peak.mark()          # wired and booted: every host's sshd running
        rep = lifecycle.check(name, store=store)
        t3 = time.perf_counter()
        out["mem_check"] = peak.mark()
        out.update(up=t1 - t0, boot=t2 - t1, check=t3 - t2, problems=len(rep.problems),
                   audited=len({x.host for x in rep.findings}), first_problems=[str(p) for p in rep.problems[:3]])
    finally:
        t4 = time.perf_counter()
        lifecycle.down(name, store=store)
        out["down"] = time.perf_counter() - t4
        out["mem_down"] = peak.mark()        # the peak while it came down
        out["mem_after"] = meminfo()["MemTotal"] - meminfo()["MemAvailable"] - peak.base_used
        peak.stop()
    out.update(peak_used=peak.used, peak_slab=peak.slab, peak_arp=peak.arp - arp0, sample_errors=peak.errors)
    return out


def measure_vm(tmp: Path, store: StateStore, settle: float) -> dict:
    from orchestrator.providers.libvirt import images, xml
    images.build("debian")
    name = f"sv{secrets.token_hex(3)}"
    f = tmp / f"{name}.yaml"
    f.write_text(f"name: {name}\nprovider: libvirt\nlibvirt: {{memory_mib: 192, tb_cache_mib: 96}}\n"
                 "hosts:\n  admin-server: {role: admin-server}\n  blade: {role: blade, lans: [admin, experimental]}\n")
    t0 = time.perf_counter()
    lifecycle.up(f, name=name, store=store)
    up = time.perf_counter() - t0
    try:
        time.sleep(settle)
        pid = int(Path(f"/run/libvirt/qemu/{xml.domain_name(name, 'blade')}.pid").read_text())
        roll = {}
        for ln in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            k, v = ln.split(":", 1)
            roll[k] = int(v.split()[0]) * 1024
        st = lifecycle.status(name, store=store)
    finally:
        lifecycle.down(name, store=store)
    return {"up": up, "rss": roll["Rss"], "pss": roll["Pss"], "anon": roll.get("Anonymous", 0),
            "notes": st.notes}


def mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=1000, help="hosts of the large lab (default 1000)")
    ap.add_argument("--small", type=int, default=200, help="hosts of the lab it is set beside (default 200)")
    ap.add_argument("--vm", action="store_true", help="also one VM's memory under emulation")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds after SSH-ready before reading the VM")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_scale: needs root")
    if not 5 < args.small <= args.hosts <= MAX_HOSTS:
        sys.exit(f"bench_scale: need 5 < --small <= --hosts <= {MAX_HOSTS}")
    tmp = Path(tempfile.mkdtemp(prefix="wt-scale-"))
    os.environ["TESTBED_STATE_DIR"] = str(tmp / "state")
    store = StateStore(tmp / "state")
    try:
        rows = [measure_lab(tmp, store, n - 5) for n in (args.small, args.hosts)]
        print(f"{'hosts':>6} {'up':>7} {'boot':>7} {'check':>8} {'down':>7}  {'check result':<22} "
              f"{'peak mem':>10} {'slab':>9} {'ARP peak':>9} {'ARP claim':>10}")
        for r in rows:
            res = "clean" if r["problems"] == 0 else f"{r['problems']} PROBLEMS"
            print(f"{r['hosts']:>6} {r['up']:>6.2f}s {r['boot']:>6.2f}s {r['check']:>7.2f}s {r['down']:>6.2f}s  "
                  f"{res + ' (' + str(r['audited']) + ' hosts)':<22} {mib(r['peak_used']):>10} "
                  f"{mib(r['peak_slab']):>9} {r['peak_arp']:>9,} {r['claim']['net.ipv4.neigh.default.gc_thresh3']:>10,}")
            print(f"{'':>6} memory in use above the baseline, peak per phase: up+boot {mib(r.get('mem_up', 0))}, "
                  f"check {mib(r.get('mem_check', 0))}, down {mib(r.get('mem_down', 0))}; after down "
                  f"{mib(r['mem_after'])}")
            for p in r["first_problems"]:
                print(f"       problem: {p}")
            if r["sample_errors"]:
                print(f"       {len(r['sample_errors'])} memory samples lost: {r['sample_errors'][0]}")
        small, big = rows
        k = big["hosts"] / small["hosts"]
        print(f"×{k:.0f} hosts: up ×{big['up'] / small['up']:.1f}, check ×{big['check'] / small['check']:.1f}, "
              f"down ×{big['down'] / small['down']:.1f}, memory ×{big['peak_used'] / max(1, small['peak_used']):.1f}; "
              f"memory per host {big['peak_used'] / big['hosts'] / 2**20:.2f} MiB at {big['hosts']} hosts")
        c = big["claim"]
        print(f"kernel-limit claim at {big['hosts']} hosts: " + ", ".join(f"{k} {v:,}" for k, v in c.items()))
        print(f"orchestrator's own peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")
        if args.vm:
            v = measure_vm(tmp, store, args.settle)
            print(f"one VM (192 MiB guest, 96 MiB TCG cache): up to SSH-ready {v['up']:.1f} s; QEMU RSS "
                  f"{mib(v['rss'])}, PSS {mib(v['pss'])}, anonymous {mib(v['anon'])} after {args.settle:.0f} s; "
                  f"{v['notes'][0] if v['notes'] else ''}")
            print(f"VMs per GiB under emulation: {2**30 / v['rss']:.2f} (by RSS), {2**30 / v['pss']:.2f} (by PSS); "
                  f"this machine's {mib(meminfo()['MemTotal'])} hold ~{int(meminfo()['MemTotal'] * 0.9 / v['pss'])} "
                  "at 90 % by PSS")
    finally:
        lifecycle.down_all(store=store)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
