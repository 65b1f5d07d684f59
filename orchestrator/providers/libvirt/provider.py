"""The libvirt provider: every lab host a virtual machine (KVM where it works, QEMU's software emulation where
not), every LAN an isolated libvirt network, through libvirt-python — the same lab files as `netns`.

- LANs: networks `wt-<lab>-<mgmt|admin|exp0…>` with no <forward> and no <ip>: bridges and nothing else.
- The admin server is not a VM: it is the hypervisor's side, a network namespace `wt.<lab>.admin-server` on the
  hypervisor plugged into the admin (and management) bridge with the lab's admin-server addresses. Control
  traffic (SSH, Ansible) stands there; the hypervisor's own root namespace has no address on any lab LAN.
- Hosts: domains `wt-<lab>-<host>` booting the image's kernel directly from a per-host qcow2 overlay, with a
  read-only seed disk (libvirt_seed) that gives each its name, keys, addresses and isolation rules at boot.
- The sniffer's experimental NIC is a tap of our own on no bridge; tc mirrors every experimental VM tap's
  ingress into it, so each frame is seen exactly once.
- Every network and domain carries <wt:lab> metadata, every resource is journalled before it is made, and
  `down` removes exactly the journalled resources that still carry this lab's tag.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import cast

from orchestrator.errors import NotRootError, ProviderError
from orchestrator.labfile.models import LibvirtOptions
from orchestrator.labfile.topology import Lab
from orchestrator.localrun import is_root
from orchestrator.providers.base import (
    Clock,
    HostState,
    HostStatus,
    LabStatus,
    Prerequisite,
    Progress,
    Resource,
    ResourceKind,
    no_progress,
)
from orchestrator.providers.faults import fault
from orchestrator.providers.keys import ensure_lab_keys
from orchestrator.providers.libvirt import hypervisor, images, seed, xml
from orchestrator.providers.libvirt.guests import GuestHosts, options, uri_of
from orchestrator.providers.libvirt.teardown import Sweep, remove_host_side
from orchestrator.providers.naming import ns_name
from orchestrator.providers.state import LabRecord

BOOT_TIMEOUT = float(os.environ.get("TESTBED_BOOT_TIMEOUT", "300"))
CONSOLE_LINES = 12


class LibvirtProvider(GuestHosts):
    name = "libvirt"

    # ------------------------------------------------------------ prerequisites

    def prerequisites(self, lab: Lab | None = None) -> list[Prerequisite]:
        opts = options(lab) if lab else LibvirtOptions()
        out = []
        try:
            hypervisor._libvirt()
            out.append(Prerequisite("libvirt-python", True, "the libvirt binding is installed"))
        except ProviderError as exc:
            out.append(Prerequisite("libvirt-python", False, exc.message, exc.hint or ""))
            return out
        local = not hypervisor.is_remote(opts.uri) and not hypervisor.is_simulated(opts.uri)
        if local:
            out.append(Prerequisite("root", is_root(), "the libvirt provider needs root here (qemu:///system, "
                                    "taps, tc, namespaces)", "run as root, e.g. sudo testbed …"))
        try:
            hypervisor.connect(opts.uri).close()
            out.append(Prerequisite("daemon", True, f"libvirt answers at {opts.uri}"))
        except ProviderError as exc:
            out.append(Prerequisite("daemon", False, exc.message, exc.hint or ""))
        for h in xml.vm_hosts(lab) if lab else []:
            name = h.options.get("image", opts.image)
            try:
                images.require(name)
            except images.ImageError as exc:
                out.append(Prerequisite(f"image {name}", False, exc.message, exc.hint or ""))
                break
        return out

    def _validate(self, lab: Lab, opts: LibvirtOptions) -> None:
        if opts.network is not None:
            raise ProviderError(f"lab '{lab.name}': libvirt.network is set to '{opts.network}'; a lab never uses "
                                "an existing libvirt network (least of all 'default', libvirt's NAT network that "
                                "forwards to the uplink): its LANs are isolated networks it makes itself",
                                hint="remove libvirt.network from the lab file")
        if "session" in opts.uri:
            raise ProviderError(f"{opts.uri}: a session (unprivileged) libvirt cannot make bridges and taps",
                                hint="use qemu:///system (as root) or qemu+ssh://root@host/system")

    # ------------------------------------------------------------ create

    def create(self, lab: Lab, progress: Progress = no_progress) -> None:
        opts = options(lab)
        self._validate(lab, opts)
        sim = hypervisor.is_simulated(opts.uri)
        hv = hypervisor.Hypervisor(opts.uri)
        if not sim and not hv.remote and not is_root():
            raise NotRootError("the libvirt provider needs root on this machine (qemu:///system, taps, tc, "
                               "namespaces)", hint="run as root, e.g. sudo testbed up …")
        imgs = {h.name: images.require(h.options.get("image", opts.image)) for h in xml.vm_hosts(lab)}
        with self.store.locked(lab.name):
            self.refuse_existing(lab.name)
            conn = hypervisor.connect(opts.uri)
            try:
                self._refuse_clashes(conn, lab, hv, sim)
                rec = LabRecord(lab.name, self.name, "creating", lab.to_dict(), extra={"uri": opts.uri})
                self.store.save(rec)
                try:
                    self._build(conn, hv, lab, opts, imgs, rec, progress, sim)
                except BaseException as exc:
                    rec.state, rec.error = "failed", str(exc)
                    self.store.save(rec)
                    if os.environ.get("TESTBED_KEEP_FAILED") == "1" and not isinstance(exc, KeyboardInterrupt):
                        raise ProviderError(f"{exc}\nthe failed lab is kept for inspection "
                                            f"(TESTBED_KEEP_FAILED=1); `testbed down {lab.name}` removes it") from exc
                    try:
                        self._teardown(rec, no_progress, conn=conn)
                    except Exception as clean_exc:   # keep the state so `down` can retry; report both
                        raise ProviderError(f"{exc}\nrolling back also failed: {clean_exc}; "
                                            f"run `testbed down {lab.name}`") from exc
                    if isinstance(exc, ProviderError | KeyboardInterrupt | NotRootError):
                        raise
                    raise ProviderError(f"building lab '{lab.name}' failed and was rolled back: {exc}") from exc
                rec.state = "up"
                self.store.save(rec)
            finally:
                conn.close()

    def _refuse_clashes(self, conn, lab: Lab, hv: hypervisor.Hypervisor, sim: bool) -> None:
        names = {xml.domain_name(lab.name, h.name) for h in xml.vm_hosts(lab)}
        have = set(conn.listDefinedDomains()) | {d.name() for d in conn.listAllDomains(0)}
        nets = {xml.network_name(lab.name, xml.seg_short(s.key, lab)) for s in lab.segments}
        clash = sorted((names & have) | (nets & {n.name() for n in conn.listAllNetworks(0)}))
        if not sim and ns_name(lab.name, "admin-server") in hv.netns():
            clash.append(ns_name(lab.name, "admin-server"))
        if clash:
            raise ProviderError(f"{', '.join(clash)} already exist(s) at {hv.uri} and no lab here recorded them; "
                                "nothing was created",
                                hint="another state directory may own them (TESTBED_STATE_DIR), or remove them "
                                     "by hand (virsh undefine / net-undefine) if you know they are stale")

    def _build(self, conn, hv: hypervisor.Hypervisor, lab: Lab, opts: LibvirtOptions, imgs: dict, rec: LabRecord,
               progress: Progress, sim: bool) -> None:
        libvirt = hypervisor._libvirt()
        state_dir = str(self.store.root)
        vms = xml.vm_hosts(lab)
        total = 8
        progress("keys", 0, total)
        keys = ensure_lab_keys(self.store, lab)

        progress("image volumes", 1, total)
        pool = hypervisor.ensure_pool(conn)
        base: dict[str, dict[str, str]] = {}
        for img in {i.key: i for i in imgs.values()}.values():
            base[img.key] = hypervisor.ensure_base_volumes(conn, pool, img, sim)

        dtype = opts.domain_type
        if dtype == "auto":
            kernel = next((b["kernel"] for b in base.values() if "kernel" in b), None)
            ok, why = (False, "no kernel to probe with") if kernel is None else \
                hypervisor.probe_kvm(conn, hv, kernel, images.image_root().parent / "kvm-probe.json")
            dtype = "kvm" if ok else "qemu"
            rec.extra["domain_type_reason"] = why
        rec.extra["domain_type"] = dtype
        self.store.save(rec)

        progress("networks", 2, total)
        if not sim and not hypervisor.chains_present(hv):
            self.store.journal(rec, "chains", ["LIBVIRT_*"])       # this lab is why they exist
            hypervisor.ensure_chains(hv)
        segs = [s.key for s in lab.segments]
        nets = [xml.network_name(lab.name, xml.seg_short(k, lab)) for k in segs]
        self.store.journal(rec, "network", nets)
        for key in segs:
            doc = xml.network_xml(lab, key, state_dir)
            xml.assert_isolated(doc)
            net = conn.networkDefineXML(doc)
            net.create()
        fault("after-networks")

        progress("admin server", 3, total)
        if not sim:
            self._admin_side(hv, lab, rec)

        progress("volumes", 4, total)
        self.store.journal(rec, "volume", [v for h in vms for v in (xml.overlay_volume(lab.name, h.name),
                                                                   xml.seed_volume(lab.name, h.name))])
        for h in vms:
            img = imgs[h.name]
            disk = base[img.key]["disk"]
            cap = pool.storageVolLookupByName(xml.base_volume(img.name, img.key, "disk")).info()[1] if not sim else 1 << 30
            pool.createXML(xml.volume_xml(xml.overlay_volume(lab.name, h.name), cap, "qcow2", backing=disk,
                                        backing_fmt=img.disk_format), 0)
            sv = pool.createXML(xml.volume_xml(xml.seed_volume(lab.name, h.name), seed.SEED_SIZE), 0)
            files = seed.seed_files(h, keys.public_key, keys.host_key(h.name).read_text(),
                                    keys.host_public_key(h.name))
            hypervisor.upload(conn, sv, seed.seed_tar(files), sim)
        fault("after-volumes")

        progress("domains", 5, total)
        taps = [xml.tap_name(lab.name, h.name, i.ifname) for h in vms for i in h.interfaces if i.mirror]
        self.store.journal(rec, "tap", taps)
        if not sim:
            for t in taps:     # no IPv6 (nothing of the hypervisor's own may reach the sniffer), then up
                hv.run(["ip", "tuntap", "add", "dev", t, "mode", "tap", "vnet_hdr"], timeout=15).check(f"creating {t}")
                hv.run(["sysctl", "-q", "-w", f"net.ipv6.conf.{t}.disable_ipv6=1"], timeout=15)
                hv.run(["ip", "link", "set", t, "up"], timeout=15).check(f"setting {t} up")
        doms = [xml.domain_name(lab.name, h.name) for h in vms]
        self.store.journal(rec, "file", [f for h in vms for f in (xml.serial_log(lab.name, h.name),
                                                                   xml.domain_log(xml.domain_name(lab.name, h.name)))])
        self.store.journal(rec, "domain", doms)
        for h in vms:
            img = imgs[h.name]
            b = base[img.key]
            boot = xml.BootSpec(xml.overlay_volume(lab.name, h.name), xml.seed_volume(lab.name, h.name) if img.seed else None,
                              b.get("kernel"), b.get("initrd"), img.cmdline)
            doc = xml.domain_xml(lab, h, boot, domain_type=dtype, memory_mib=h.options.get("memory_mib", opts.memory_mib),
                               vcpus=h.options.get("vcpus", opts.vcpus), tb_cache_mib=opts.tb_cache_mib,
                               state_dir=state_dir)
            conn.defineXML(doc)
        fault("after-define")
        progress("starting VMs", 6, total)

        def start(name: str) -> None:
            try:
                conn.lookupByName(name).create()
            except libvirt.libvirtError as exc:
                raise ProviderError(f"starting {name} failed: {str(exc).strip().splitlines()[0]}") from None

        with ThreadPoolExecutor(max_workers=max(1, len(doms))) as pool_ex:
            list(pool_ex.map(start, doms))
        if not sim:
            self._after_start(hv, lab)
        fault("after-start")
        progress("waiting for SSH", 7, total)
        if not sim:
            self._wait_ssh(hv, lab, progress, total)
        progress("ready", total, total)

    def _admin_side(self, hv: hypervisor.Hypervisor, lab: Lab, rec: LabRecord) -> None:
        """The admin server as the hypervisor's side: a namespace with veths into the admin/management bridges."""
        adm = xml.admin_server(lab)
        ns = ns_name(lab.name, adm.name)
        veths = [xml.veth_name(lab.name, adm.name, i.ifname) for i in adm.interfaces]
        self.store.journal(rec, "netns", [ns])
        self.store.journal(rec, "veth", veths)
        hv.run(["ip", "netns", "add", ns], timeout=15).check(f"creating namespace {ns}")
        root_lines, ns_lines = [], ["link set lo up"]
        for i, v in zip(adm.interfaces, veths, strict=True):
            root_lines.append(f"link add {v} type veth peer name {i.ifname} netns {ns} address {i.mac}")
            ns_lines += [f"addr add {i.address} dev {i.ifname}", f"link set {i.ifname} up"]
        hv.batch(["ip"], root_lines).check("creating the admin server's links")
        sysctls = [f"net.ipv6.conf.{v}.disable_ipv6=1" for v in veths]
        hv.run(["sysctl", "-q", "-w", *sysctls], timeout=15)
        hv.run(["ip", "netns", "exec", ns, "sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1", "net.ipv4.ip_forward=0"], timeout=15)
        hv.batch(["ip"], [f"link set {v} master {xml.bridge_name(lab.name, xml.seg_short(i.segment, lab))} up"
                          for i, v in zip(adm.interfaces, veths, strict=True)]).check("plugging the admin server in")
        hv.batch(["ip", "-n", ns], ns_lines).check("addressing the admin server")

    def _after_start(self, hv: hypervisor.Hypervisor, lab: Lab) -> None:
        """After (re)starting VMs: no IPv6 on their taps (the hypervisor sends nothing into the lab), and the
        sniffer's mirror from every experimental tap."""
        have = hv.links()
        taps = [xml.tap_name(lab.name, h.name, i.ifname) for h in xml.vm_hosts(lab) for i in h.interfaces]
        sysctls = [f"net.ipv6.conf.{t}.disable_ipv6=1" for t in taps if t in have]
        if sysctls:
            hv.run(["sysctl", "-q", "-w", *sysctls], timeout=15)
        pairs = [(s, d) for s, d in xml.mirror_plan(lab) if s in have and d in have]
        hypervisor.install_mirror(hv, pairs)

    def _wait_ssh(self, hv: hypervisor.Hypervisor, lab: Lab, progress: Progress, total: int) -> None:
        vms = xml.vm_hosts(lab)
        pending = {h.name: h.ip("admin") for h in vms}
        deadline = time.monotonic() + BOOT_TIMEOUT
        lock = threading.Lock()
        ready: list[str] = []

        def wait_one(host: str, addr: str) -> None:
            while time.monotonic() < deadline:
                try:
                    with self.control_socket(lab.name, addr, 22, timeout=3) as s:
                        s.settimeout(5)
                        if s.recv(64).startswith(b"SSH-"):
                            with lock:
                                ready.append(host)
                                progress(f"SSH ready {len(ready)}/{len(vms)} ({host})", 7, total)
                            return
                except OSError:
                    pass
                time.sleep(1.0)

        with ThreadPoolExecutor(max_workers=len(vms) or 1) as ex:
            list(ex.map(lambda kv: wait_one(*kv), pending.items()))
        missing = [h for h in pending if h not in ready]
        if missing:
            parts = []
            for h in missing:
                tail = self._console_tail(hv, lab.name, h)
                parts.append(f"{h} ({pending[h]}): last lines of its serial console:\n    " + "\n    ".join(tail))
            raise ProviderError(f"{len(missing)} VM(s) did not answer SSH within {BOOT_TIMEOUT:.0f} s: "
                                + "\n  ".join(parts),
                                hint="under software emulation a loaded machine boots slowly: TESTBED_BOOT_TIMEOUT "
                                     "raises the limit; a seed or image problem shows in the lines above")

    def _console_tail(self, hv: hypervisor.Hypervisor, lab: str, host: str) -> list[str]:
        text = hv.read_file(xml.serial_log(lab, host))
        lines = [ln.rstrip("\r") for ln in text.replace("\x1b", "").splitlines() if ln.strip()]
        return lines[-CONSOLE_LINES:] or ["(nothing on the serial console)"]

    # ------------------------------------------------------------ destroy

    def _ours(self, doc: str, lab: str) -> bool:
        meta = xml.parse_metadata(doc)
        return meta is not None and meta.get("lab") == lab and meta.get("state-dir") == str(self.store.root)

    def _teardown(self, rec: LabRecord, progress: Progress, conn=None) -> list[Resource]:
        uri = uri_of(rec)
        sim = hypervisor.is_simulated(uri)
        hv = hypervisor.Hypervisor(uri)
        own_conn = conn is None
        conn = conn or hypervisor.connect(uri)
        sweep = Sweep(rec, conn, self._ours)
        try:
            progress("domains", 0, 6)
            sweep.domains()
            progress("taps", 1, 6)
            if not sim:
                sweep.taps(hv)
            progress("networks", 2, 6)
            sweep.networks()
            progress("volumes", 3, 6)
            sweep.volumes()
            progress("admin server", 4, 6)
            if not sim:
                sweep.removed += remove_host_side(hv, rec, sweep.failed)
                if rec.owns("chains") or hypervisor.chains_ours(hv):
                    active = [n for n in conn.listAllNetworks(0) if n.isActive()]
                    if not active:
                        sweep.removed += [Resource("chain", c, True) for c in hypervisor.remove_empty_chains(hv)]
        finally:
            if own_conn:
                conn.close()
        if sweep.failed:
            rec.error = "; ".join(sweep.failed)
            self.store.save(rec)
            raise ProviderError(f"lab '{rec.name}' was not removed completely: " + "; ".join(sweep.failed),
                                hint=f"the lab's state is kept; fix the cause and run `testbed down {rec.name}` again")
        progress("state", 5, 6)
        self.store.remove(rec.name)
        progress("done", 6, 6)
        return sweep.removed

    # ------------------------------------------------------------ inspection

    def resources(self, name: str) -> list[Resource]:
        rec = self.store.require(name)
        libvirt = hypervisor._libvirt()
        uri = uri_of(rec)
        conn = hypervisor.connect(uri)
        hv = hypervisor.Hypervisor(uri)
        try:
            doms = {d.name() for d in conn.listAllDomains(0)}
            nets = {n.name() for n in conn.listAllNetworks(0)}
            try:
                pool = conn.storagePoolLookupByName(xml.POOL)
                vols = set(pool.listVolumes()) if pool.isActive() else set()
            except libvirt.libvirtError:
                vols = set()
        finally:
            conn.close()
        sim = hypervisor.is_simulated(uri)
        links = hv.links() if not sim else set()
        spaces = hv.netns() if not sim else set()
        present = {"domain": doms, "network": nets, "volume": vols, "tap": links, "veth": links, "netns": spaces}
        out = []
        for e in rec.journal:
            kind = cast(ResourceKind, e["kind"])     # the journal holds only the kinds this provider wrote
            n = e["name"]
            if kind in present:
                out.append(Resource(kind, n, n in present[kind]))
            elif kind == "file":
                out.append(Resource(kind, n, not sim and hv.exists(n)))
            else:
                out.append(Resource(kind, n, hypervisor.chains_present(hv) if kind == "chains" and not sim
                                    else False))
        return out

    def clock(self, rec: LabRecord) -> Clock:
        # guests under QEMU's software emulation keep time less tightly: a wider tolerance, said so
        dtype = rec.extra.get("domain_type")
        return Clock(shared=False, emulated=dtype == "qemu", domain_type=dtype)

    def status(self, name: str) -> LabStatus:
        rec = self.store.require(name)
        lab = rec.topology
        st = LabStatus(rec.name, rec.provider, rec.state, lab.source, rec.created)
        libvirt = hypervisor._libvirt()
        conn = hypervisor.connect(uri_of(rec))
        try:
            for h in lab.hosts:
                addrs = {i.ifname: i.address or "" for i in h.interfaces}
                if h.role == "admin-server":     # its namespace is on the hypervisor, which may be another machine
                    up = hypervisor.is_simulated(uri_of(rec)) or ns_name(name, h.name) in hypervisor.Hypervisor(
                        uri_of(rec)).netns()
                    state: HostState = "up" if up else "missing"
                    st.hosts.append(HostStatus(h.name, h.role, state, addrs, {k: "UP" for k in addrs} if up else {}))
                    continue
                try:
                    dom = conn.lookupByName(xml.domain_name(name, h.name))
                    state = "up" if dom.isActive() else "down"
                except libvirt.libvirtError:
                    state = "missing"
                st.hosts.append(HostStatus(h.name, h.role, state, addrs,
                                           {k: "UP" if state == "up" else "DOWN" for k in addrs}))
        finally:
            conn.close()
        if rec.state == "up" and any(h.state != "up" for h in st.hosts):
            st.state = "degraded"
        st.notes.append(f"{rec.extra.get('domain_type', '?')} guests at {uri_of(rec)}"
                        + (f" ({rec.extra['domain_type_reason']})" if rec.extra.get("domain_type_reason") else ""))
        if rec.state != "up":
            st.notes.append(rec.error or f"left {rec.state} by an interrupted command; `testbed down {name}`")
        return st
