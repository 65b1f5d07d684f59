"""Running things in a namespace lab's hosts, from this machine: a command out-of-band (`exec`), long-running
processes recorded with their start time (`spawn`, `processes`, `stop`), a shell (`console`), where
control traffic stands (the admin server's namespace), and how the hosts stand (`status`). Each host runs in its namespace with its own /run,
/root and hostname (a private mount and UTS namespace)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence

from orchestrator.atomic import atomic_write_json, read_json
from orchestrator.localrun import Result, pid_start_time, run_attached
from orchestrator.providers.base import HostStatus, LabStatus, Provider
from orchestrator.providers.naming import ns_name
from orchestrator.providers.netns import namespaces
from orchestrator.providers.netns.links import inspect_links
from orchestrator.providers.netns.processes import signal_if_same, wait_gone
from orchestrator.providers.state import LabRecord

# runs a command as the host: its own /run, its own /root (so root's shell start-up files on this machine
# do not run in the lab), its own hostname — a private mount and UTS namespace. /tmp is shared.
_HOST_WRAPPER = ('mount --bind "$1/run" /run && mount --bind "$1/home" /root && hostname "$2" '
                 '&& shift 2 && exec "$@"')


class NamespaceHosts(Provider):
    """What the netns provider does inside hosts that are up (the building and removing is provider.py)."""

    def boot_state(self, name: str) -> str:
        """booted | booting | failed: <why>: the provider's own reading of its boot (provider.py)."""
        raise NotImplementedError

    def _host_argv(self, lab: str, host: str, argv: Sequence[str]) -> list[str]:
        hdir = self.store.host_dir(lab, host)
        return ["ip", "netns", "exec", ns_name(lab, host), "unshare", "--mount", "--uts", "--propagation",
                "private", "--", "/bin/sh", "-c", _HOST_WRAPPER, "sh", str(hdir), host, *argv]

    def _check_host(self, name: str, host: str) -> LabRecord:
        return self.lab_host(name, host)[0]

    def exec(self, name: str, host: str, argv: Sequence[str], *, timeout: float | None = 60.0,
             input: str | None = None, capture: bool = True) -> Result:
        self._check_host(name, host)
        return run_attached(self._host_argv(name, host, argv), argv, timeout=timeout, input=input,
                            capture=capture, host=host)

    def spawn(self, name: str, host: str, pname: str, argv: Sequence[str], *,
              env: dict[str, str] | None = None, service: bool = False) -> int:
        """Start a long-running process in a host; its output goes to the host's log/<pname>.log.
        A service (sshd) is started again when the host is powered on."""
        self._check_host(name, host)
        return self._spawn(name, host, pname, argv, env=env, service=service)

    def _spawn(self, name: str, host: str, pname: str, argv: Sequence[str], *,
               env: dict[str, str] | None = None, service: bool = False) -> int:
        hdir = self.store.host_dir(name, host)
        for sub in ("log", "procs", "run", "home"):      # the host may still be booting
            os.makedirs(hdir / sub, exist_ok=True)
        log = hdir / "log" / f"{pname}.log"
        with open(log, "ab") as fh:
            p = subprocess.Popen(self._host_argv(name, host, argv), stdin=subprocess.DEVNULL, stdout=fh,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 env=None if env is None else {**os.environ, **env})
        atomic_write_json(hdir / "procs" / f"{pname}.json",
                          {"name": pname, "pid": p.pid, "starttime": pid_start_time(p.pid), "argv": list(argv),
                           "log": str(log), "started": time.time(), "service": service, "env": env or {}},
                          fsync=False)
        return p.pid

    def processes(self, name: str, host: str) -> list[dict]:
        pdir = self.store.host_dir(name, host) / "procs"
        out = []
        for f in sorted(pdir.glob("*.json")) if pdir.is_dir() else []:
            try:
                d = read_json(f)
            except (OSError, ValueError):
                continue
            d["alive"] = d.get("starttime") is not None and pid_start_time(d["pid"]) == d["starttime"]
            out.append(d)
        return out

    def stop(self, name: str, host: str, pname: str, *, timeout: float = 5.0) -> bool:
        """Stop a process started with spawn (SIGTERM, then SIGKILL); False if it was not running."""
        f = self.store.host_dir(name, host) / "procs" / f"{pname}.json"
        try:
            d = read_json(f)
        except (OSError, ValueError):
            return False
        was = signal_if_same(d["pid"], d.get("starttime"), signal.SIGTERM)
        if was:
            wait_gone({d["pid"]: d.get("starttime")}, timeout, kill=True)
        f.unlink(missing_ok=True)
        return was


    def console(self, name: str, host: str) -> int:
        """A shell in the host (its namespace, /run, /root and hostname)."""
        self._check_host(name, host)
        shell = "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"
        return subprocess.call(self._host_argv(name, host, [shell, "-i"]))

    # ------------------------------------------------------------ control traffic

    def control_socket(self, name: str, address: str, port: int, timeout: float) -> socket.socket:
        rec = self.store.require(name)
        admin = rec.topology.by_role("admin-server")[0].name
        return namespaces.connect_from(ns_name(name, admin), address, port, timeout)

    def control_argv(self, name: str) -> list[str]:
        rec = self.store.require(name)
        admin = rec.topology.by_role("admin-server")[0].name
        return ["ip", "netns", "exec", ns_name(name, admin)]

    def status(self, name: str) -> LabStatus:
        rec = self.store.require(name)
        lab = rec.topology
        st = LabStatus(rec.name, rec.provider, rec.state, lab.source, rec.created)
        have = namespaces.list_netns()
        links = inspect_links([ns_name(lab.name, h.name) for h in lab.hosts if ns_name(lab.name, h.name) in have])
        for h in lab.hosts:
            ns = ns_name(lab.name, h.name)
            if ns not in have:
                st.hosts.append(HostStatus(h.name, h.role, "missing"))
                continue
            info = links.get(ns, {})
            hs = HostStatus(h.name, h.role, "up",
                            addresses={i.ifname: info.get(i.ifname, {}).get("address", "") for i in h.interfaces},
                            links={i.ifname: info.get(i.ifname, {}).get("state", "absent") for i in h.interfaces},
                            processes=self.processes(name, h.name))
            if any(v != "UP" for v in hs.links.values()):
                hs.state = "degraded"
            st.hosts.append(hs)
        if rec.state == "up" and any(h.state != "up" for h in st.hosts):
            st.state = "degraded"
        limits = rec.extra.get("kernel_limits") or {}
        if limits.get("raised"):
            st.notes.append("kernel limits raised for this lab (put back when the last lab is down): "
                            + ", ".join(limits["raised"]))
        st.notes += limits.get("notes", [])
        if rec.state != "up":
            st.notes.append(rec.error or f"left {rec.state} by an interrupted command; `testbed down {name}`")
        elif (boot := self.boot_state(name)) != "booted":
            st.notes.append(f"hosts {boot}" + ("" if boot == "booting" else f" — see {self.store.lab_dir(name) / 'boot.log'}"))
        return st
