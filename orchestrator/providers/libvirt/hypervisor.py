"""The libvirt provider's contact with the world: the libvirt connection (opened with a time limit, errors turned
into cause + fix), commands on the hypervisor (locally, or over ssh for qemu+ssh:// URIs), the storage pool and
image upload, the KVM probe, the sniffer's mirror (tc), libvirt's leftover iptables chains, and out-of-band exec
through the QEMU guest agent.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shlex
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import parse_qs, quote, urlparse

from orchestrator.atomic import atomic_write_json, read_json
from orchestrator.errors import ProviderError
from orchestrator.localrun import Result, run
from orchestrator.providers.libvirt import xml

POOL_PATH = "/var/lib/libvirt/images/worm-testbed"
CONNECT_TIMEOUT = 15.0


def _libvirt():
    try:
        import libvirt
    except ImportError:
        raise ProviderError("the libvirt Python binding is not installed",
                            hint="make setup-vm (installs libvirt-python into .venv, and libvirt itself), or pip install libvirt-python") from None
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)   # errors arrive as exceptions, not on stderr
    return libvirt


def is_simulated(uri: str) -> bool:
    """libvirt's test driver (test:///default): no daemon, no QEMU, no hypervisor-side commands."""
    return uri.startswith("test:")


def is_remote(uri: str) -> bool:
    return bool(urlparse(uri).hostname) and not is_simulated(uri)


def ssh_options(uri: str) -> dict[str, str]:
    """The URI's `keyfile=` and `known_hosts=` (libvirt's own parameter names), for our ssh commands too."""
    q = parse_qs(urlparse(uri).query)
    return {k: q[k][-1] for k in ("keyfile", "known_hosts") if q.get(k)}


def ssh_wrapper_text(known_hosts: str) -> str:
    return ("#!/bin/sh\n# libvirt's ssh transport with the URI's known_hosts pinned (written by worm-testbed)\n"
            f"exec ssh -o UserKnownHostsFile={shlex.quote(known_hosts)} -o StrictHostKeyChecking=yes "
            "-o BatchMode=yes \"$@\"\n")


def ssh_wrapper(known_hosts: str, root: Path | None = None) -> Path:
    """A file that runs ssh with this known_hosts pinned, for libvirt's `command=` (written once per content,
    in a directory of this user's only)."""
    text = ssh_wrapper_text(known_hosts)
    d = root or Path(tempfile.gettempdir()) / f"wt-ssh-{os.getuid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    st = d.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise ProviderError(f"{d} is not a private directory of this user's; not writing an ssh command there")
    f = d / f"ssh-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    if not f.exists() or f.read_text() != text:
        tmp = d / f".{f.name}.{os.getpid()}"
        tmp.write_text(text)
        tmp.chmod(0o700)
        tmp.replace(f)
    return f


def libvirt_uri(uri: str, wrapper_root: Path | None = None) -> str:
    """The URI handed to libvirt. Its `ssh` transport (the OpenSSH binary) silently ignores `known_hosts=`
    and checks the user's ~/.ssh/known_hosts instead, so a qemu+ssh URI that pins a known_hosts file gets
    `command=` naming a small ssh wrapper that pins it. (Its libssh transport honours known_hosts=, but
    hangs here with several connections at once: every guest-agent call of a `check` blocked for good.)"""
    u = urlparse(uri)
    opts = ssh_options(uri)
    if not u.scheme.endswith("+ssh") or "known_hosts" not in opts or "command" in parse_qs(u.query):
        return uri
    cmd = ssh_wrapper(opts["known_hosts"], wrapper_root)
    return u._replace(query=f"{u.query}&command={quote(str(cmd), safe='/')}").geturl()


def explain_connect_error(uri: str, msg: str) -> ProviderError:
    low = msg.lower()
    if "no such file or directory" in low and "sock" in low or "connection refused" in low and not is_remote(uri):
        return ProviderError(f"no libvirt daemon answers at {uri} ({msg.strip().splitlines()[0]})",
                             hint="start it: `virtlogd -d && libvirtd -d` (no systemd) or `systemctl start libvirtd`; "
                                  "`make setup-vm` installs and starts both")
    if "permission denied" in low or "authentication" in low or "not authorized" in low:
        return ProviderError(f"no permission to use libvirt at {uri} ({msg.strip().splitlines()[0]})",
                             hint="run as root (qemu:///system), or add your user to the 'libvirt' group")
    if is_remote(uri):
        return ProviderError(f"the hypervisor at {uri} does not answer ({msg.strip().splitlines()[0]})",
                             hint="check `virsh -c URI list` works: ssh access as root with a key, libvirtd "
                                  "running there")
    return ProviderError(f"cannot connect to libvirt at {uri}: {msg.strip()}",
                         hint="check the URI in the lab file's libvirt.uri (e.g. qemu:///system)")


def connect(uri: str, timeout: float = CONNECT_TIMEOUT):
    """libvirt.open(uri), bounded in time (an unreachable qemu+ssh host would otherwise hang for minutes)."""
    libvirt = _libvirt()
    box: dict = {}

    def target() -> None:
        try:
            box["conn"] = libvirt.open(libvirt_uri(uri))
        except libvirt.libvirtError as exc:
            box["err"] = str(exc)

    t = threading.Thread(target=target, daemon=True, name="libvirt-open")
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise ProviderError(f"the hypervisor at {uri} did not answer within {timeout:.0f} s",
                            hint="is the host up and reachable, and libvirtd running there?")
    if "err" in box:
        raise explain_connect_error(uri, box["err"])
    return box["conn"]


class Hypervisor:
    """Runs commands on the hypervisor: here for local URIs, through `ssh` for qemu+ssh://[user@]host[:port]/."""

    def __init__(self, uri: str):
        self.uri = uri
        u = urlparse(uri)
        self.remote = is_remote(uri)
        self.ssh: list[str] = []
        if self.remote:
            target = f"{u.username}@{u.hostname}" if u.username else str(u.hostname)
            self.ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
            opts = ssh_options(uri)
            if "keyfile" in opts:
                self.ssh += ["-i", opts["keyfile"], "-o", "IdentitiesOnly=yes"]
            if "known_hosts" in opts:        # pinned: an unknown or changed host key is refused, never added
                self.ssh += ["-o", f"UserKnownHostsFile={opts['known_hosts']}", "-o", "StrictHostKeyChecking=yes"]
            if u.port:
                self.ssh += ["-p", str(u.port)]
            self.ssh.append(target)

    def argv(self, argv: Sequence[str]) -> list[str]:
        return [*self.ssh, "--", shlex.join(argv)] if self.remote else list(argv)

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float = 60.0) -> Result:
        return run(self.argv(argv), input=input, timeout=timeout)

    def batch(self, tool: Sequence[str], lines: Sequence[str], timeout: float = 60.0) -> Result:
        return self.run([*tool, "-batch", "-"], input="\n".join(lines) + "\n", timeout=timeout)

    def netns(self) -> set[str]:
        """The named network namespaces on the hypervisor."""
        if not self.remote:
            from orchestrator.providers.netns import namespaces
            return set(namespaces.list_netns())
        return {ln.split()[0] for ln in self.run(["ip", "netns", "list"], timeout=15).stdout.splitlines() if ln.strip()}

    def exists(self, path: str) -> bool:
        return os.path.exists(path) if not self.remote else self.run(["test", "-e", path], timeout=15).ok

    def links(self) -> set[str]:
        r = self.run(["ip", "-o", "link", "show"], timeout=15)
        return {line.split(":")[1].strip().split("@")[0] for line in r.stdout.splitlines() if ":" in line}

    def read_file(self, path: str) -> str:
        if not self.remote:
            try:
                return Path(path).read_text(errors="replace")
            except OSError:
                return ""
        return self.run(["cat", path], timeout=15).stdout


# ---------------------------------------------------------------- storage


def ensure_pool(conn):
    libvirt = _libvirt()
    try:
        pool = conn.storagePoolLookupByName(xml.POOL)
    except libvirt.libvirtError:
        pool = conn.storagePoolDefineXML(xml.pool_xml(POOL_PATH), 0)
        pool.build(0)
        pool.setAutostart(1)
    if not pool.isActive():
        pool.create(0)
    return pool


def lookup_volume(pool, name: str):
    libvirt = _libvirt()
    try:
        return pool.storageVolLookupByName(name)
    except libvirt.libvirtError:
        return None


def upload(conn, vol, data_or_path: bytes | Path, simulated: bool) -> None:
    if simulated:
        return                                  # the test driver stores no content
    st = conn.newStream(0)
    if isinstance(data_or_path, bytes):
        vol.upload(st, 0, len(data_or_path), 0)
        st.send(data_or_path)
        st.finish()
        return
    size = data_or_path.stat().st_size
    vol.upload(st, 0, size, 0)
    with open(data_or_path, "rb") as fh:
        st.sendAll(lambda _s, n, f: f.read(n), fh)
    st.finish()


def ensure_base_volumes(conn, pool, img, simulated: bool) -> dict[str, str]:
    """Upload a built image's disk, kernel and initrd into the pool once (shared by every lab, never deleted by
    `down`); a `-complete` marker volume says the upload finished, so a killed upload is redone."""
    files = {"disk": img.disk, "kernel": img.kernel, "initrd": img.initrd}
    names = {k: xml.base_volume(img.name, img.key, k) for k, v in files.items() if v is not None}
    marker = xml.base_volume(img.name, img.key, "complete")
    if lookup_volume(pool, marker) is None:
        for what, name in names.items():
            old = lookup_volume(pool, name)
            if old is not None:
                old.delete(0)
            path = files[what]
            assert path is not None
            vol = pool.createXML(xml.volume_xml(name, path.stat().st_size), 0)
            upload(conn, vol, path, simulated)
        pool.createXML(xml.volume_xml(marker, 0), 0)
        pool.refresh(0)
    return {k: pool.storageVolLookupByName(n).path() for k, n in names.items()}


# ---------------------------------------------------------------- KVM or software emulation


def probe_kvm(conn, hv: Hypervisor, kernel_path: str, cache: Path, *, wait: float = 5.0) -> tuple[bool, str]:
    """Does KVM work here? Boot the image's kernel under KVM for a few seconds and look for its first line on
    the serial port (a KVM that exists but hangs guests prints nothing); on a remote hypervisor too, its serial
    log read over ssh. Cached per URI and host boot."""
    if is_simulated(hv.uri):
        return False, "test driver"
    boot_id = hv.run(["cat", "/proc/sys/kernel/random/boot_id"], timeout=15).stdout.strip()
    try:
        cached = read_json(cache).get(hv.uri, {})
        if cached.get("boot_id") == boot_id and boot_id:
            return bool(cached["kvm"]), cached["detail"] + " (cached)"
    except (OSError, ValueError, KeyError):
        pass
    if not hv.run(["test", "-c", "/dev/kvm"], timeout=15).ok:
        ok, detail = False, "no /dev/kvm"
    else:   # also on a remote hypervisor: its capabilities list KVM where /dev/kvm exists but hangs guests
        ok, detail = _kvm_boot(conn, hv, kernel_path, wait)
    try:
        data = read_json(cache)
    except (OSError, ValueError):
        data = {}
    data[hv.uri] = {"boot_id": boot_id, "kvm": ok, "detail": detail, "when": time.time()}
    atomic_write_json(cache, data)
    return ok, detail


def _kvm_boot(conn, hv: Hypervisor, kernel_path: str, wait: float) -> tuple[bool, str]:
    libvirt = _libvirt()
    name = f"wt-kvm-probe-{os.getpid()}-{threading.get_native_id()}"   # --parallel: one per instance's thread
    log = f"/var/log/libvirt/qemu/{name}-serial.log"
    try:
        dom = conn.createXML(xml.probe_domain_xml(name, kernel_path, log), 0)
    except libvirt.libvirtError as exc:
        return False, f"KVM domain refused: {str(exc).splitlines()[0]}"
    try:
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if "Linux version" in hv.read_file(log):
                return True, f"a KVM guest printed its first line within {wait:.0f} s"
            time.sleep(0.2)
        return False, f"a KVM guest printed nothing within {wait:.0f} s (KVM present but not usable)"
    finally:
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
        hv.run(["rm", "-f", log, xml.domain_log(name)], timeout=15)


# ---------------------------------------------------------------- the sniffer's mirror


def mirror_lines(pairs: list[tuple[str, str]]) -> list[str]:
    """tc batch: every frame a VM sends into its experimental tap is copied once to the sniffer's tap
    (u32 match-all: the matchall classifier is not built into every kernel)."""
    out = []
    for src, dst in pairs:
        out += [f"qdisc add dev {src} clsact",
                f"filter add dev {src} ingress protocol all pref 1 u32 match u32 0 0 "
                f"action mirred egress mirror dev {dst}"]
    return out


def install_mirror(hv: Hypervisor, pairs: list[tuple[str, str]]) -> None:
    """(Re)install the mirror on these taps: any earlier clsact qdisc (and its filters) is replaced."""
    if not pairs:
        return
    hv.run(["tc", "-force", "-batch", "-"], input="".join(f"qdisc del dev {s} clsact\n" for s, _ in pairs),
           timeout=30)
    hv.batch(["tc"], mirror_lines(pairs)).check("mirroring the experimental LAN to the sniffer")


# ---------------------------------------------------------------- libvirt's iptables chains

# (table, chain, parent chains): what libvirt 9 creates once per daemon and leaves behind
LIBVIRT_CHAINS = [("filter", "LIBVIRT_INP", ["INPUT"]), ("filter", "LIBVIRT_OUT", ["OUTPUT"]),
                  ("filter", "LIBVIRT_FWO", ["FORWARD"]), ("filter", "LIBVIRT_FWI", ["FORWARD"]),
                  ("filter", "LIBVIRT_FWX", ["FORWARD"]), ("nat", "LIBVIRT_PRT", ["POSTROUTING"]),
                  ("mangle", "LIBVIRT_PRT", ["POSTROUTING"])]
IPT = ("iptables", "ip6tables")
# On the hypervisor, in /run (gone at a reboot, as the chains are): the testbed made the chains there. Any lab
# of ours taken down last (no libvirt network left active) removes them, not only the lab that made them: with
# parallel lab instances, the one that made them is often not the last one down.
CHAINS_MARK = "/run/worm-testbed-libvirt-chains"


def chains_present(hv: Hypervisor) -> bool:
    return hv.run(["iptables", "-w", "5", "-t", "filter", "-S", "LIBVIRT_INP"], timeout=15).ok


def ensure_chains(hv: Hypervisor) -> bool:
    """libvirt 9 makes its private chains only once per daemon; if a previous `down` removed them, make them
    again exactly as libvirt does (jumps inserted first) so its network start can fill them. True if made."""
    if chains_present(hv):
        return False
    for tool in IPT:   # each jump goes first: in this order FORWARD ends FWX, FWI, FWO (same-bridge accept first)
        for table, chain, parents in LIBVIRT_CHAINS:
            hv.run([tool, "-w", "5", "-t", table, "-N", chain], timeout=15)
            for parent in parents:
                hv.run([tool, "-w", "5", "-t", table, "-I", parent, "1", "-j", chain], timeout=15)
    hv.run(["sh", "-c", f"echo made by worm-testbed > {CHAINS_MARK}"], timeout=15)
    return True


def chains_ours(hv: Hypervisor) -> bool:
    """Did the testbed make libvirt's chains on this hypervisor (since its last boot)?"""
    return hv.run(["test", "-e", CHAINS_MARK], timeout=15).ok


def remove_empty_chains(hv: Hypervisor) -> list[str]:
    """Remove libvirt's LIBVIRT_* chains where they are empty (only jumps to them remain); the testbed's mark
    goes with the last of them."""
    removed, left = [], False
    for tool in IPT:
        for table, chain, parents in LIBVIRT_CHAINS:
            r = hv.run([tool, "-w", "5", "-t", table, "-S", chain], timeout=15)
            if not r.ok:
                continue
            if [ln for ln in r.stdout.splitlines() if not ln.startswith("-N ")]:
                left = True                                 # still in use: leave it
                continue
            for parent in parents:
                while hv.run([tool, "-w", "5", "-t", table, "-D", parent, "-j", chain], timeout=15).ok:
                    pass
            if hv.run([tool, "-w", "5", "-t", table, "-X", chain], timeout=15).ok:
                removed.append(f"{tool}:{table}/{chain}")
            else:
                left = True
    if not left:
        hv.run(["rm", "-f", CHAINS_MARK], timeout=15)
    return removed


# ---------------------------------------------------------------- out-of-band exec through the guest agent


def agent_exec(dom, argv: Sequence[str], *, timeout: float | None, input: str | None = None,
               host: str | None = None) -> Result:
    """Run argv in the guest through qemu-guest-agent (guest-exec, then guest-exec-status until it exits).
    The command is wrapped in `timeout` inside the guest, so nothing outlives its limit."""
    import libvirt_qemu

    libvirt = _libvirt()
    started = time.monotonic()
    limit = timeout if timeout is not None else 24 * 3600.0
    args: dict = {"path": "timeout", "arg": ["-k", "2", f"{limit:.0f}", *argv], "capture-output": True}
    if input is not None:
        args["input-data"] = base64.b64encode(input.encode()).decode()
    try:
        ret = libvirt_qemu.qemuAgentCommand(dom, json.dumps({"execute": "guest-exec", "arguments": args}), 10, 0)
        pid = json.loads(ret)["return"]["pid"]
    except libvirt.libvirtError as exc:
        raise ProviderError(f"the guest agent of {host or dom.name()} does not answer "
                            f"({str(exc).splitlines()[0]})",
                            hint="is the VM up? `testbed status LAB`, `testbed power LAB HOST on`") from None
    deadline = started + limit + 10
    delay = 0.02
    while True:
        try:
            st = json.loads(libvirt_qemu.qemuAgentCommand(
                dom, json.dumps({"execute": "guest-exec-status", "arguments": {"pid": pid}}), 10, 0))["return"]
        except libvirt.libvirtError as exc:
            raise ProviderError(f"lost the guest agent of {host or dom.name()}: {str(exc).splitlines()[0]}") from None
        if st.get("exited"):
            break
        if time.monotonic() > deadline:
            return Result(tuple(argv), 124, "", f"timed out after {timeout} s", time.monotonic() - started, host,
                          timed_out=True)
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    out = base64.b64decode(st.get("out-data", "")).decode(errors="replace")
    err = base64.b64decode(st.get("err-data", "")).decode(errors="replace")
    code = st.get("exitcode", 128 + st.get("signal", 0))
    return Result(tuple(argv), code, out, err, time.monotonic() - started, host, timed_out=code == 124)
