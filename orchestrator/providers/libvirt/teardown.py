"""Removing a libvirt lab: its domains (in parallel: a QEMU takes a second or two to go), taps, networks and
volumes — only those the journal names and that carry the lab's tag — and what it made on the hypervisor
(the admin server's namespace). What could not be removed is said, never guessed at."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from orchestrator.providers.base import Resource, ResourceKind
from orchestrator.providers.libvirt import hypervisor, xml
from orchestrator.providers.state import LabRecord

DESTROY_ATTEMPTS = 3          # virDomainDestroy can fail while a loaded machine's QEMU is still dying


class Sweep:
    """One teardown's removal of a lab's libvirt objects, what it removed and what it could not."""

    def __init__(self, rec: LabRecord, conn, ours: Callable[[str, str], bool]):
        self.rec, self.conn, self.ours = rec, conn, ours
        self.libvirt = hypervisor._libvirt()
        self.removed: list[Resource] = []
        self.failed: list[str] = []

    def owned(self, kind: str, lookup) -> list:
        """What the journal names, exists, and carries our tag."""
        found = []
        for oname in self.rec.owns(kind):
            try:
                obj = lookup(oname)
            except self.libvirt.libvirtError:
                continue
            if self.ours(obj.XMLDesc(0), self.rec.name):
                found.append(obj)
            else:
                self.failed.append(f"{kind} {oname} exists but is not tagged as lab {self.rec.name}'s; left alone")
        return found

    def remove(self, obj, what: str) -> str | None:
        """A domain or a network: stop it, forget it; what went wrong, or None."""
        for attempt in range(DESTROY_ATTEMPTS):
            try:
                if obj.isActive():
                    obj.destroy()
                obj.undefine()
                return None
            except self.libvirt.libvirtError as exc:
                # a loaded machine: QEMU slow to die ("Failed to terminate process … Device or
                # resource busy"), or it died between isActive and destroy; ask again
                if attempt == DESTROY_ATTEMPTS - 1:
                    return f"{what}: {str(exc).splitlines()[0]}"
                time.sleep(1.0 + attempt)
        return None

    def _removed(self, kind: ResourceKind, name: str, problem: str | None) -> None:
        if problem:
            self.failed.append(problem)
        else:
            self.removed.append(Resource(kind, name, True))

    def domains(self) -> None:
        doms = self.owned("domain", self.conn.lookupByName)
        with ThreadPoolExecutor(max_workers=max(1, len(doms))) as ex:   # a QEMU takes a second or two to go
            problems = ex.map(lambda d: self.remove(d, f"domain {d.name()}"), doms)
            for dom, problem in zip(doms, problems, strict=True):
                self._removed("domain", dom.name(), problem)

    def taps(self, hv: hypervisor.Hypervisor) -> None:
        have = hv.links()
        for t in self.rec.owns("tap"):
            if t in have:
                self._removed("tap", t, None if hv.run(["ip", "link", "del", t], timeout=15).ok else f"tap {t}")

    def networks(self) -> None:
        for net in self.owned("network", self.conn.networkLookupByName):
            self._removed("network", net.name(), self.remove(net, f"network {net.name()}"))

    def volumes(self) -> None:
        vols = [v for v in self.rec.owns("volume") if v.startswith(xml.volume_prefix(self.rec.name))]
        if not vols:
            return
        try:
            pool = self.conn.storagePoolLookupByName(xml.POOL)
            pool.refresh(0)
        except self.libvirt.libvirtError:
            pool = None
        for v in vols:
            vol = hypervisor.lookup_volume(pool, v) if pool is not None else None
            if vol is None:
                continue
            try:
                vol.delete(0)
                self.removed.append(Resource("volume", v, True))
            except self.libvirt.libvirtError as exc:
                self.failed.append(f"volume {v}: {str(exc).splitlines()[0]}")


def remove_host_side(hv: hypervisor.Hypervisor, rec: LabRecord, failed: list[str]) -> list[Resource]:
    """What a lab made on the hypervisor itself: the admin server's namespace and its links."""
    removed = []
    spaces = hv.netns()
    for ns in rec.owns("netns"):
        if ns in spaces:
            if hv.run(["ip", "netns", "del", ns], timeout=15).ok:
                removed.append(Resource("netns", ns, True))
            else:
                failed.append(f"namespace {ns}")
    have = hv.links()
    for v in rec.owns("veth"):
        # removing the namespace removes its veths' peers too, in the kernel's own time: one listed a
        # moment ago may be gone by now, which is what we wanted
        if v in have and not hv.run(["ip", "link", "del", v], timeout=15).ok and v in hv.links():
            failed.append(f"veth {v}")
    files = rec.owns("file")
    if files:
        hv.run(["rm", "-f", "--", *files], timeout=15)
        removed += [Resource("file", f, True) for f in files]
    return removed
