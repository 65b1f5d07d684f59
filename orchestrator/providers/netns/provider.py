"""The embedded default provider: each host a Linux network namespace, each LAN a bridge in the lab's own
switch namespace (one per simulated machine, joined by VXLAN: machines.py), the sniffer fed by ingress
`tc mirred` from every experimental port.

Nothing is created in the machine's root namespace: veth pairs are made directly inside the lab's
namespaces, so deleting those namespaces removes every interface. Names: `wt.<lab>.<host>` and
`wt.<lab>.switch`. Built with `ip -batch` (one process per namespace, in parallel) because it is ten
times faster than per-host pyroute2 sockets here; pyroute2 is used to inspect.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from orchestrator.atomic import atomic_write_json, read_json
from orchestrator.errors import NotRootError, ProviderError
from orchestrator.labfile import isolation
from orchestrator.labfile.topology import Host, Lab
from orchestrator.localrun import is_root, pid_start_time, run, run_batch
from orchestrator.providers.base import (
    Clock,
    Prerequisite,
    Progress,
    Resource,
    Underlay,
    no_progress,
)
from orchestrator.providers.faults import fault
from orchestrator.providers.keys import ensure_lab_keys
from orchestrator.providers.naming import PREFIX, ns_name
from orchestrator.providers.netns import machines, namespaces, nftables, vxlan
from orchestrator.providers.netns.hosts import NamespaceHosts
from orchestrator.providers.netns.limits import Registry, needs, open_files_needed
from orchestrator.providers.netns.links import inspect_links, links_without_carrier
from orchestrator.providers.netns.processes import (
    raise_open_files,
    signal_if_same,
    tcp_listening,
    terminate,
    wait_gone,
)
from orchestrator.providers.state import LabRecord

_SHADOWED = ("/run", "/root")   # what each host replaces: the state directory must not live there

class NetnsProvider(NamespaceHosts):
    name = "netns"

    def __init__(self, store=None, limits: Registry | None = None):
        super().__init__(store)
        self.limits = limits or Registry()

    # ------------------------------------------------------------ prerequisites

    def prerequisites(self, lab: Lab | None = None) -> list[Prerequisite]:
        out = [Prerequisite("root", is_root(), "the netns provider needs root (network namespaces, bridges)",
                            "run as root, e.g. sudo testbed …")]
        for tool, pkg in (("ip", "iproute2"), ("tc", "iproute2"), ("bridge", "iproute2"), ("nft", "nftables"),
                          ("unshare", "util-linux")):
            ok = run(["which", tool], timeout=5).ok
            out.append(Prerequisite(tool, ok, f"'{tool}' is not installed", f"apt-get install {pkg} (or make setup)"))
        return out

    def require(self) -> None:
        root = str(self.store.root.resolve())
        for shadowed in _SHADOWED:
            if root == shadowed or root.startswith(shadowed + "/"):
                raise ProviderError(f"the state directory {root} is under {shadowed}, which every lab host "
                                    "replaces with its own", hint="set TESTBED_STATE_DIR elsewhere "
                                    "(default /var/lib/worm-testbed)")
        failed = [p for p in self.prerequisites() if not p.ok]
        if not failed:
            return
        if failed[0].name == "root":
            raise NotRootError(f"{failed[0].message}", hint=failed[0].fix)
        raise ProviderError("; ".join(p.message for p in failed), hint="; ".join(p.fix for p in failed))

    # ------------------------------------------------------------ create

    def create(self, lab: Lab, progress: Progress = no_progress) -> None:
        self.require()
        with self.store.locked(lab.name):
            self.refuse_existing(lab.name)
            names = machines.namespaces(lab) + [ns_name(lab.name, h.name) for h in lab.hosts]
            clash = sorted(set(names) & namespaces.list_netns())
            if clash:
                raise ProviderError(f"network namespace {clash[0]} already exists and is not recorded by any "
                                    f"lab here; nothing was created",
                                    hint="another state directory may own it (TESTBED_STATE_DIR), or remove it "
                                         "by hand if you know it is stale")
            rec = LabRecord(lab.name, self.name, "creating", lab.to_dict())
            self.store.journal(rec, "netns", names)
            try:
                self._claim_kernel_limits(lab, rec)      # refuses before anything is built if it cannot
                self._build(lab, rec, progress)
            except BaseException as exc:
                rec.state, rec.error = "failed", str(exc)
                self.store.save(rec)
                self._teardown(rec, no_progress)
                if isinstance(exc, ProviderError | KeyboardInterrupt):
                    raise
                raise ProviderError(f"building lab '{lab.name}' failed and was rolled back: {exc}") from exc
            rec.state = "up"
            self.store.save(rec)

    def _claim_kernel_limits(self, lab: Lab, rec: LabRecord) -> None:
        """Size what the lab needs of the kernel's shared limits (limits.py) and raise them, journalled."""
        need = needs(lab)
        raise_open_files(open_files_needed(lab))
        with self.limits.locked():
            writes, notes = self.limits.check(lab.name, need)
            claim = self.limits.new_claim(lab.name)
            rec.extra["kernel_limits"] = {"claim": claim, "needs": need, "notes": notes}
            self.store.journal(rec, "kernel-limits", [claim])       # before the claim, before any write
            rec.extra["kernel_limits"]["raised"] = self.limits.acquire(claim, lab.name, self.store.root.resolve(),
                                                                       need, writes)
        self.store.save(rec)

    def _build(self, lab: Lab, rec: LabRecord, progress: Progress) -> None:
        total = 6
        progress("namespaces", 0, total)
        run_batch(["ip"], [f"netns add {n}" for n in rec.owns("netns")]).check("creating namespaces")
        fault("after-netns")

        progress("sysctls", 1, total)
        for name in rec.owns("netns"):
            namespaces.write_sysctls(name, {
                "ipv6.conf.all.disable_ipv6": "1", "ipv6.conf.default.disable_ipv6": "1",
                "ipv4.ip_forward": "0",
            })
        for h in lab.hosts:
            if h.forwarding:
                namespaces.write_sysctls(ns_name(lab.name, h.name), {"ipv4.ip_forward": "1"})

        progress("links", 2, total)
        veths = []
        for h in lab.hosts:
            for i in h.interfaces:
                veths.append(f"link add name {i.ifname} netns {ns_name(lab.name, h.name)} address {i.mac} "
                             f"type veth peer name {i.port} netns {machines.switch_ns(lab.name, machines.machine_of(h))}")
        if machines.count(lab) > 1:
            veths.append(machines.underlay_link(lab))
        run_batch(["ip"], veths).check("creating veth pairs")
        fault("after-veth")

        progress("addresses", 3, total)
        self._configure_switch(lab)
        self._configure_hosts(lab)
        fault("after-config")

        progress("isolation", 4, total)
        for h in lab.hosts:
            if h.forwarding:
                namespaces.write_sysctls(ns_name(lab.name, h.name), {
                    f"ipv4.conf.{i.ifname}.forwarding": "0" for i in h.interfaces
                    if not i.segment.startswith("experimental")})
        self._apply_isolation(lab)
        progress("boot", 5, total)
        for h in lab.hosts:      # what running anything in a host needs (its private /run and /root): now
            d = self.store.host_dir(lab.name, h.name)
            os.makedirs(d / "run", exist_ok=True)
            os.mkdir(d / "home", 0o700)
        self._start_boot(lab, rec)
        progress("ready", total, total)

    def _start_boot(self, lab: Lab, rec: LabRecord) -> None:
        """Hand the hosts' booting (keys, state directories, sshd) to a detached process: `up` is done when
        the network is; the hosts come up within seconds, and whatever needs SSH waits for them."""
        d = self.store.lab_dir(lab.name)
        with open(d / "boot.log", "ab") as log:
            p = subprocess.Popen([sys.executable, "-m", "orchestrator.providers.netns.boot", lab.name],
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, env={**os.environ, "TESTBED_STATE_DIR": str(self.store.root)})
        rec.extra["booter"] = {"pid": p.pid, "starttime": pid_start_time(p.pid)}
        self.store.save(rec)

    def boot_state(self, name: str) -> str:
        """booted | booting | failed: <why> (the hosts' sshd and state directories)."""
        d = self.store.lab_dir(name)
        if (d / "booted").exists():
            return "booted"
        if (d / "boot-failed").exists():
            return "failed: " + (d / "boot-failed").read_text().strip()
        rec = self.store.load(name)
        b = (rec.extra.get("booter") if rec else None) or {}
        if b and pid_start_time(b["pid"]) == b.get("starttime") is not None:
            return "booting"
        return "failed: the boot process ended without finishing (see boot.log)" if b else "booted"

    def wait_ready(self, name: str) -> bool:
        if self.boot_state(name) != "booting":
            return False
        self.wait_booted(name)
        return True

    def clock(self, rec: LabRecord) -> Clock:
        return Clock(shared=True)      # every host is a namespace of this machine's one kernel

    def unrecorded(self) -> list[str]:
        """Namespaces that look like ours (wt.*) but no lab in this state directory recorded: left alone."""
        owned: set[str] = set()
        for name in self.store.names():
            rec = self.store.load(name)
            if rec:
                owned |= set(rec.owns("netns"))
        return sorted(n for n in namespaces.list_netns() if n.startswith(PREFIX) and n not in owned)

    def wait_booted(self, name: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while (state := self.boot_state(name)) == "booting":
            if time.monotonic() > deadline:
                raise ProviderError(f"lab '{name}' is still booting after {timeout:.0f} s "
                                    f"(see {self.store.lab_dir(name) / 'boot.log'})")
            time.sleep(0.05)
        if state != "booted":
            raise ProviderError(f"lab '{name}' did not boot: {state.removeprefix('failed: ')}")

    def _boot(self, lab: Lab) -> None:
        """What a machine does when it starts: every host gets its state directories and an sshd on its
        admin address, with the lab's pinned host key and the lab's client key as the only authorized key."""
        keys = ensure_lab_keys(self.store, lab)
        authorized = keys.public_key + "\n"
        sshds: list[tuple[str, int, str]] = []
        for h in lab.hosts:
            d = self.store.host_dir(lab.name, h.name)
            for sub in ("run/sshd", "home", "log", "procs", "etc"):
                os.makedirs(d / sub, exist_ok=True)
            os.chmod(d / "home", 0o700)
            admin_ip = h.ip("admin")
            if not admin_ip:
                continue
            (d / "etc" / "authorized_keys").write_text(authorized)
            (d / "etc" / "sshd_config").write_text(sshd_config(admin_ip, keys.host_key(h.name),
                                                               d / "etc" / "authorized_keys"))
            pid = self._spawn(lab.name, h.name, "sshd", [SSHD, "-D", "-e", "-f", str(d / "etc" / "sshd_config")],
                              service=True)
            sshds.append((h.name, pid, admin_ip))
        self._wait_listening(lab.name, sshds)     # booted means reachable

    def _wait_listening(self, name: str, sshds: list[tuple[str, int, str]]) -> None:
        """Wait until each (host, pid, admin address) sshd listens, read from its own namespace's TCP table."""
        deadline = time.monotonic() + SSHD_LISTEN_TIMEOUT_S
        while sshds:
            sshds = [(host, pid, addr) for host, pid, addr in sshds if not tcp_listening(pid, addr, 22)]
            dead = [(host, pid) for host, pid, _ in sshds if pid_start_time(pid) is None]
            if dead:
                host = dead[0][0]
                log = self.store.host_dir(name, host) / "log" / "sshd.log"
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
                raise ProviderError(f"the sshd of {host} exited as it started" + (f": {tail[0]}" if tail else ""))
            if sshds and time.monotonic() > deadline:
                raise ProviderError(f"{len(sshds)} sshd(s) not listening after {SSHD_LISTEN_TIMEOUT_S:.0f} s: "
                                    + ", ".join(host for host, _, _ in sshds[:5]))
            if sshds:
                time.sleep(0.02)

    def revive(self, name: str) -> list[str]:
        """Start again the services (sshd, …) of powered-on hosts that died without being stopped — as when
        the session or machine that started them ended — and wait for their sshds; returns "host/service"."""
        rec = self.store.require(name)
        if self.boot_state(name) == "booting":
            self.wait_booted(name)
        revived, sshds = [], []
        for h in rec.topology.hosts:
            for d in self.processes(name, h.name):
                if d.get("service") and not d["alive"] and not d.get("powered_off"):
                    pid = self.spawn(name, h.name, d["name"], d["argv"], env=d.get("env") or None, service=True)
                    revived.append(f"{h.name}/{d['name']}")
                    if d["name"] == "sshd" and (admin_ip := h.ip("admin")):
                        sshds.append((h.name, pid, admin_ip))
        self._wait_listening(name, sshds)
        return revived

    def _apply_isolation(self, lab: Lab) -> None:
        """Load each dual-homed host's isolation table (orchestrator.labfile.isolation)."""
        for h in lab.hosts:
            rules = isolation.ruleset(h)
            if rules:
                nftables.load(ns_name(lab.name, h.name), rules, what=f"isolation rules of {h.name}")

    def _configure_switch(self, lab: Lab) -> None:
        """Every machine's switch (machines.py): bridges, ports, MACs, the sniffer's mirror; with several
        machines, first each underlay (its VTEP, its filter, the VXLAN devices it hands to its switch)."""
        n = machines.count(lab)
        for m in range(n if n > 1 else 0):
            lines, rules = machines.underlay_plan(lab, m)
            ul = machines.underlay_ns(lab.name, m)
            nftables.load(ul, rules, what=f"the underlay filter of machine {m}")
            run_batch(["ip", "-n", ul], lines).check(f"configuring the underlay of machine {m}")
        for m in range(n):
            sw, plan = machines.switch_ns(lab.name, m), machines.switch_plan(lab, m)
            run_batch(["ip", "-n", sw], plan.ip).check("configuring the lab switch")
            # every host's MAC is known where it is plugged in, as a managed switch is configured: a frame for a
            # host that has not spoken yet goes to its port, not to all 200 (the isolation audit sends ~80,000
            # such frames on a 200-host LAN; flooded, they cost 16 s of CPU)
            run_batch(["bridge", "-n", sw], plan.bridge).check("recording the hosts' MACs on the lab switch")
            if plan.tc:
                run_batch(["tc", "-n", sw], plan.tc).check("mirroring the experimental LAN to the sniffer")

    def _configure_hosts(self, lab: Lab) -> None:
        procs: list[tuple[Host, subprocess.Popen]] = []
        for h in lab.hosts:
            lines = ["link set lo up"]
            for i in h.interfaces:
                if i.mirror:
                    lines += [f"link set {i.ifname} arp off", f"link set {i.ifname} up"]
                else:
                    lines += [f"addr add {i.address} dev {i.ifname}", f"link set {i.ifname} up"]
            if h.default_via:
                lines.append(f"route add default via {h.default_via}")
            lines.append("link show")
            p = subprocess.Popen(["ip", "-o", "-n", ns_name(lab.name, h.name), "-batch", "-"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            assert p.stdin is not None
            p.stdin.write("\n".join(lines) + "\n")
            p.stdin.close()
            p.stdin = None  # so communicate() below only reads
            procs.append((h, p))
        down: list[str] = []
        errors: list[str] = []
        for h, p in procs:
            out, err = p.communicate(timeout=60)
            if p.returncode != 0:
                errors.append(f"{h.name}: {err.strip().splitlines()[-1] if err.strip() else 'ip failed'}")
                continue
            down += [f"{h.name}/{n}" for n in links_without_carrier(out, [i.ifname for i in h.interfaces])]
        if errors:
            raise ProviderError("configuring hosts failed: " + "; ".join(errors[:5]))
        if down:
            self._wait_carrier(lab, down)

    def _wait_carrier(self, lab: Lab, pending: list[str], timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            time.sleep(0.02)
            still = []
            for item in pending:
                host, ifname = item.split("/")
                r = run(["ip", "-n", ns_name(lab.name, host), "-o", "link", "show", ifname], timeout=5)
                if links_without_carrier(r.stdout, [ifname]):
                    still.append(item)
            pending = still
        if pending:
            raise ProviderError(f"no carrier after {timeout:.0f} s on {', '.join(pending[:5])}")

    # ------------------------------------------------------------ destroy

    def _teardown(self, rec: LabRecord, progress: Progress) -> list[Resource]:
        names = rec.owns("netns")
        removed: list[Resource] = []
        progress("processes", 0, 3)
        booter = rec.extra.get("booter")        # first the boot process, so it starts nothing more
        if booter and signal_if_same(booter["pid"], booter.get("starttime"), signal.SIGTERM):
            wait_gone({booter["pid"]: booter.get("starttime")}, 3.0, kill=True)
        recorded = set()
        for pid, starttime, label in self._recorded_processes(rec):
            if signal_if_same(pid, starttime, signal.SIGTERM):
                recorded.add(pid)
                removed.append(Resource("process", f"{pid}", True, label))
        # anything else still running inside the lab's namespaces was started in the lab: end it
        terminate({pid: ns for pid, ns in namespaces.pids_in_netns(names).items()}, removed, already=recorded)
        progress("namespaces", 1, 3)
        present = [n for n in names if n in namespaces.list_netns()]
        if present:
            res = run_batch(["ip", "-force"], [f"netns del {n}" for n in present])
            if not res.ok:
                for n in present:
                    run(["ip", "netns", "del", n], timeout=10)
        left = sorted(set(names) & namespaces.list_netns())
        if left:
            raise ProviderError(f"could not remove namespace(s) {', '.join(left)}; the lab state is kept so "
                                f"`testbed down {rec.name}` can be retried")
        removed += [Resource("netns", n, True) for n in present]
        for claim in rec.owns("kernel-limits"):     # before the record goes: a claim stands while it journals it
            removed += [Resource("sysctl", change, True) for change in self.limits.release(claim)]
        progress("state", 2, 3)
        self.store.remove(rec.name)
        progress("done", 3, 3)
        return removed

    def _recorded_processes(self, rec: LabRecord) -> list[tuple[int, int | None, str]]:
        out = []
        for h in rec.topology.hosts:
            pdir = self.store.host_dir(rec.name, h.name) / "procs"
            for f in sorted(pdir.glob("*.json")) if pdir.is_dir() else []:
                try:
                    d = read_json(f)
                    out.append((int(d["pid"]), d.get("starttime"), f"{h.name}/{d['name']}"))
                except (OSError, ValueError, KeyError):
                    continue
        return out

    # ------------------------------------------------------------ inspection

    def resources(self, name: str) -> list[Resource]:
        rec = self.store.require(name)
        have = namespaces.list_netns()
        out = [Resource("netns", n, n in have) for n in rec.owns("netns")]
        for pid, starttime, label in self._recorded_processes(rec):
            out.append(Resource("process", str(pid), pid_start_time(pid) == starttime and starttime is not None,
                                label))
        return out

    def wire_point(self, name: str, host: str) -> tuple[list[str], str]:
        # the switch side of the host's experimental veth, inside the lab's own switch namespace
        rec = self._check_host(name, host)
        port = next((i.port for i in rec.topology.host(host).interfaces
                     if i.segment.startswith("experimental") and not i.mirror), None)
        if port is None:
            raise ProviderError(f"{host} has no experimental interface to throttle on the wire")
        return ["ip", "netns", "exec", machines.switch_ns(name, machines.machine_of(rec.topology.host(host)))], port

    def underlays(self, name: str) -> list[Underlay]:
        rec = self.store.require(name)
        lab = rec.topology
        if machines.count(lab) < 2:
            return []
        vteps = tuple(m.vtep.split("/")[0] for m in machines.machines(lab))
        return [Underlay(m.index, ["ip", "netns", "exec", m.underlay_ns], m.underlay_if, vteps,
                         lab.options["underlay"], vxlan.VXLAN_PORT) for m in machines.machines(lab)]

    def host_vars(self, name: str, host: Host) -> dict:
        # hosts share this machine's filesystem: each installs under its own state directory
        return {**super().host_vars(name, host), "testbed_prefix": str(self.store.host_dir(name, host.name) / "opt")}

    # ------------------------------------------------------------ out-of-band management

    def power(self, name: str, host: str, action: str) -> str:
        """off: stop the host's processes (their records are kept) and take its links down; on: links up, the
        default route back, and its recorded services (sshd, …; not one-off processes) started again, as a
        machine's boot would; cycle: both."""
        if action not in ("on", "off", "cycle"):
            raise ProviderError(f"power action '{action}': use on, off or cycle")
        rec = self._check_host(name, host)
        h = rec.topology.host(host)
        ns = ns_name(name, host)
        links = inspect_links([ns]).get(ns, {})
        was_on = all(links.get(i.ifname, {}).get("state") == "UP" for i in h.interfaces)
        if action in ("off", "cycle"):
            pdir = self.store.host_dir(name, host) / "procs"
            for d in self.processes(name, host):
                if d.pop("alive"):
                    self.stop(name, host, d["name"])
                    atomic_write_json(pdir / f"{d['name']}.json", {**d, "powered_off": time.time()})
            terminate(namespaces.pids_in_netns([ns]), [])
            run_batch(["ip", "-n", ns], [f"link set {i.ifname} down" for i in h.interfaces]).check(
                f"taking {host}'s links down")
        if action in ("on", "cycle"):
            lines = [f"link set {i.ifname} up" for i in h.interfaces]
            if h.default_via:
                lines.append(f"route replace default via {h.default_via}")
            run_batch(["ip", "-n", ns], lines).check(f"bringing {host}'s links up")
            self._wait_carrier(rec.topology, [f"{host}/{i.ifname}" for i in h.interfaces])
            sshds = []
            for d in self.processes(name, host):
                if d.get("service") and not d["alive"]:       # as a machine's boot starts its services
                    pid = self.spawn(name, host, d["name"], d["argv"], env=d.get("env") or None, service=True)
                    if d["name"] == "sshd" and (admin_ip := h.ip("admin")):
                        sshds.append((host, pid, admin_ip))
            self._wait_listening(name, sshds)
        now_on = action != "off"
        return f"{host}: {'on' if was_on else 'off'} -> {'on' if now_on else 'off'}"


SSHD = "/usr/sbin/sshd"
SSHD_LISTEN_TIMEOUT_S = 30.0      # a lab host is booted once its sshd listens


def sshd_config(address: str, host_key, authorized_keys) -> str:
    """A lab host's sshd: its admin address only, the lab's keys only, no passwords, no TTY, no forwarding."""
    return f"""# written by worm-testbed; this host's sshd listens on the admin LAN only
ListenAddress {address}:22
HostKey {host_key}
AuthorizedKeysFile {authorized_keys}
PidFile /run/sshd.pid
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitTTY no
PrintMotd no
PrintLastLog no
UseDNS no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
MaxStartups 200
MaxSessions 100
LogLevel ERROR
Subsystem sftp internal-sftp
"""
