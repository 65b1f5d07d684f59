"""Reaching a libvirt lab's guests from this machine: a command out-of-band (the guest agent, or the admin
server's namespace), where control traffic stands (a relay in the admin server's namespace), the wire
placement (the hypervisor side of a guest's tap), power and the serial console."""

from __future__ import annotations

import base64
import shlex
import socket
import subprocess
import sys
from collections.abc import Sequence

from orchestrator.errors import ProviderError
from orchestrator.labfile.models import LibvirtOptions
from orchestrator.labfile.topology import Lab
from orchestrator.localrun import Result, run_attached
from orchestrator.providers.base import Provider
from orchestrator.providers.libvirt import hypervisor, xml
from orchestrator.providers.naming import ns_name
from orchestrator.providers.netns import namespaces
from orchestrator.providers.state import LabRecord


def options(lab: Lab) -> LibvirtOptions:
    return LibvirtOptions.model_validate(lab.options or {})


def uri_of(rec: LabRecord) -> str:
    return rec.extra.get("uri") or options(rec.topology).uri


class GuestHosts(Provider):
    """What the libvirt provider does with guests that are up (building and removing them is provider.py)."""

    def _after_start(self, hv: hypervisor.Hypervisor, lab: Lab) -> None:
        """After (re)starting VMs (power on/cycle): the provider's own step (provider.py)."""
        raise NotImplementedError

    # ------------------------------------------------------------ running things in hosts

    def exec(self, name: str, host: str, argv: Sequence[str], *, timeout: float | None = 60.0,
             input: str | None = None, capture: bool = True) -> Result:
        rec, h = self.lab_host(name, host)
        uri = uri_of(rec)
        if h.role == "admin-server":
            hv = hypervisor.Hypervisor(uri)
            full = hv.argv(["ip", "netns", "exec", ns_name(name, host), *argv])
            return run_attached(full, argv, timeout=timeout, input=input, capture=capture, host=host)
        conn = hypervisor.connect(uri)
        try:
            dom = conn.lookupByName(xml.domain_name(name, host))
            res = hypervisor.agent_exec(dom, argv, timeout=timeout, input=input, host=host)
        finally:
            conn.close()
        if not capture:
            sys.stdout.write(res.stdout)
            sys.stdout.flush()
            sys.stderr.write(res.stderr)
        return res

    # ------------------------------------------------------------ control traffic

    def control_socket(self, name: str, address: str, port: int, timeout: float) -> socket.socket:
        rec = self.store.require(name)
        lab = rec.topology
        ns = ns_name(name, xml.admin_server(lab).name)
        hv = hypervisor.Hypervisor(uri_of(rec))
        if hv.remote:
            return _relay_socket(hv, ns, address, port, timeout)
        return namespaces.connect_from(ns, address, port, timeout)

    def wire_point(self, name: str, host: str) -> tuple[list[str], str]:
        # the hypervisor's side of the VM's experimental tap (bridge netfilter sees its frames in FORWARD)
        rec = self.store.require(name)
        if hypervisor.is_remote(uri_of(rec)):
            raise ProviderError("the wire placement runs the throttle on the hypervisor; it needs a local one "
                                "(qemu:///system), not a remote URI")
        h = rec.topology.host(host)
        iface = next((i for i in h.interfaces if i.segment.startswith("experimental") and not i.mirror), None)
        if iface is None:
            raise ProviderError(f"{host} has no experimental interface to throttle on the wire")
        return [], xml.tap_name(name, host, iface.ifname)

    def ssh_hosts(self, lab: Lab) -> list[str]:
        # the admin server is the hypervisor's own side of the lab: where SSH starts from, not a machine
        return [h.name for h in lab.hosts if h.ip("admin") and h.role != "admin-server"]

    def remote_shells(self, name: str) -> list[list[str]]:
        hv = hypervisor.Hypervisor(uri_of(self.store.require(name)))
        return [[*hv.ssh, "--"]] if hv.remote else []

    def control_proxy(self, name: str) -> str | None:
        # on a remote hypervisor the admin LAN is only there: ssh keeps running here (with the lab's keys and
        # known_hosts, which are here) and reaches %h:%p through a relay in the admin server's namespace there
        rec = self.store.require(name)
        hv = hypervisor.Hypervisor(uri_of(rec))
        if not hv.remote:
            return None
        ns = ns_name(name, xml.admin_server(rec.topology).name)
        return shlex.join(hv.argv(["ip", "netns", "exec", ns, *_relay_argv("%h", "%p", 10.0)]))

    def control_argv(self, name: str) -> list[str]:
        rec = self.store.require(name)
        ns = ns_name(name, xml.admin_server(rec.topology).name)
        hv = hypervisor.Hypervisor(uri_of(rec))
        return [*hv.ssh, "--", "ip", "netns", "exec", ns] if hv.remote else ["ip", "netns", "exec", ns]

    # ------------------------------------------------------------ out-of-band management

    def power(self, name: str, host: str, action: str) -> str:
        rec, h = self.lab_host(name, host)
        if action not in ("on", "off", "cycle"):
            raise ProviderError(f"power action '{action}': use on, off or cycle")
        if h.role == "admin-server":
            raise ProviderError(f"{host} is the hypervisor's own side of lab {name}, not a VM; it has no power "
                                "control")
        libvirt = hypervisor._libvirt()
        uri = uri_of(rec)
        conn = hypervisor.connect(uri)
        try:
            dom = conn.lookupByName(xml.domain_name(name, host))
            was = bool(dom.isActive())
            if action in ("off", "cycle") and dom.isActive():
                dom.destroy()                      # a remote management card's hard power-off
            if action in ("on", "cycle") and not dom.isActive():
                dom.create()
                if not hypervisor.is_simulated(uri):
                    self._after_start(hypervisor.Hypervisor(uri), rec.topology)
            now = bool(dom.isActive())
        except libvirt.libvirtError as exc:
            raise ProviderError(f"power {action} of {host} failed: {str(exc).splitlines()[0]}") from None
        finally:
            conn.close()
        return f"{host}: {'on' if was else 'off'} -> {'on' if now else 'off'}"

    def console(self, name: str, host: str) -> int:
        rec, h = self.lab_host(name, host)
        uri = uri_of(rec)
        if h.role == "admin-server":
            hv = hypervisor.Hypervisor(uri)
            return subprocess.call(hv.argv(["ip", "netns", "exec", ns_name(name, host), "/bin/bash", "-i"]))
        print(f"console of {host} (serial ttyS0); leave with Ctrl+]", file=sys.stderr)
        return subprocess.call(["virsh", "-c", hypervisor.libvirt_uri(uri), "console", "--force", xml.domain_name(name, host)])


# stdin/stdout as file descriptors (a PYTHONUNBUFFERED there has no .raw); the connect timeout is not kept for
# the data (an idle SSH session would otherwise end after `timeout` seconds); partial writes are finished
_RELAY_SRC = ("import os,socket,sys,threading\n"
              "s=socket.create_connection((sys.argv[1],int(sys.argv[2])),float(sys.argv[3]));s.settimeout(None)\n"
              "def up():\n while (d:=os.read(0,65536)):s.sendall(d)\n s.shutdown(socket.SHUT_WR)\n"
              "threading.Thread(target=up,daemon=True).start()\n"
              "while (d:=s.recv(65536)):\n while d:d=d[os.write(1,d):]\n")
# one argument without %, newlines or backslashes: shell-quoted once per shell, and unchanged by ssh's %-tokens
_RELAY = f"import base64;exec(base64.b64decode('{base64.b64encode(_RELAY_SRC.encode()).decode()}'))"


def _relay_argv(address: str, port: str, timeout: float) -> list[str]:
    return ["python3", "-c", _RELAY, address, port, f"{timeout:g}"]


def _relay_socket(hv: hypervisor.Hypervisor, ns: str, address: str, port: int, timeout: float) -> socket.socket:
    """A socket whose other end is a TCP connection made inside the admin-server namespace of a remote
    hypervisor (ssh + a small python3 relay there)."""
    mine, theirs = socket.socketpair()
    argv = hv.argv(["ip", "netns", "exec", ns, *_relay_argv(address, str(port), timeout)])
    subprocess.Popen(argv, stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=subprocess.DEVNULL, start_new_session=True)
    theirs.close()
    mine.settimeout(timeout)
    return mine
