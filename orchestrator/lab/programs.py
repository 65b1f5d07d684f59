"""Running the testbed's own programs on lab hosts over SSH, as provisioning laid them out.

`LabHosts` knows each host's install prefix and Python (from the provider's inventory variables), builds the
command lines for our modules (worm, throttle, host agent) and starts/stops services through the host agent.
Everything goes through orchestrator.lab.ssh; nothing here runs a local process.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from typing import Any

from orchestrator.errors import AccessError
from orchestrator.lab.ssh import Access
from orchestrator.localrun import Result


class LabHosts:
    def __init__(self, access: Access):
        self.access = access
        self.lab = access.lab
        self._vars = {h.name: access.provider.host_vars(self.lab.name, h) for h in self.lab.hosts}

    def prefix(self, host: str) -> str:
        return self._vars[host]["testbed_prefix"]

    def python(self, host: str) -> str:
        return self._vars[host]["testbed_python"]

    def module_argv(self, host: str, module: str, *args: str) -> list[str]:
        p = self.prefix(host)
        return ["env", f"PYTHONPATH={p}/lib", f"TESTBED_PREFIX={p}", self.python(host), "-m", module, *args]

    def run_module(self, host: str, module: str, *args: str, timeout: float | None = 60.0,
                   input: str | None = None) -> Result:
        return self.access.run(host, self.module_argv(host, module, *args), timeout=timeout, input=input)

    def _agent(self, host: str, *args: str, timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
        res = self.run_module(host, "hostagent", *args, timeout=timeout)
        try:
            data = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {}
        except ValueError:
            data = {}
        if res.exit_code not in (0, 1, 3) or (not data and res.exit_code != 0):
            raise AccessError(f"host agent on {host} failed ({res.exit_code}): "
                              f"{(res.stderr or res.stdout).strip()[-300:]}")
        return res.exit_code, data

    def start(self, host: str, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None,
              log: str | None = None) -> dict[str, Any]:
        """Start a service on host; AccessError (with the tail of its log) if it does not stay up."""
        extra: list[str] = []
        for k, v in (env or {}).items():
            extra += ["--env", f"{k}={v}"]
        if log:
            extra += ["--log", log]
        code, data = self._agent(host, "start", name, *extra, "--", *argv)
        if code != 0:
            tail = self.access.run(host, ["tail", "-n", "5", data.get("log", "/dev/null")], timeout=10).stdout
            raise AccessError(f"{name} on {host} did not start: {data.get('error', '?')}"
                              + (f"; its log ends: {tail.strip()}" if tail.strip() else ""))
        return data

    def stop(self, host: str, name: str, *, signal: str = "TERM", timeout: float = 10.0) -> dict[str, Any]:
        """Stop a service; returns the agent's report ({"running": False} if it had already ended)."""
        _, data = self._agent(host, "stop", name, "--signal", signal, "--timeout", str(timeout),
                              timeout=timeout + 15)
        return data

    def wait(self, host: str, name: str, timeout: float) -> dict[str, Any]:
        _, data = self._agent(host, "wait", name, "--timeout", str(timeout), timeout=timeout + 15)
        return data

    def status(self, host: str, *names: str) -> list[dict[str, Any]]:
        _, data = self._agent(host, "status", *names)
        return data.get("services", [])

    def read(self, host: str, path: str, *, tail: int | None = None) -> str:
        cmd = ["tail", "-n", str(tail), path] if tail else ["cat", path]
        res = self.access.run(host, cmd, timeout=30)
        if not res.ok:
            raise AccessError(f"cannot read {host}:{path}: {res.stderr.strip()}")
        return res.stdout

    def sh(self, host: str, script: str, timeout: float | None = 60.0) -> Result:
        return self.access.run(host, ["sh", "-c", script], timeout=timeout)


def quote(argv: Sequence[str]) -> str:
    return shlex.join(argv)


class HostPlace:
    """Where a program of ours runs: a lab host, over SSH."""

    def __init__(self, hosts: LabHosts, host: str):
        self.hosts, self.host = hosts, host
        self.prefix = hosts.prefix(host)
        self.label = host

    def module_argv(self, module: str, *args: str) -> list[str]:
        return self.hosts.module_argv(self.host, module, *args)

    def start(self, name: str, argv: Sequence[str], **kw) -> dict[str, Any]:
        return self.hosts.start(self.host, name, argv, **kw)

    def stop(self, name: str, **kw) -> dict[str, Any]:
        return self.hosts.stop(self.host, name, **kw)

    def sh(self, script: str, timeout: float | None = 60.0) -> Result:
        return self.hosts.sh(self.host, script, timeout=timeout)

    def run(self, argv: Sequence[str], timeout: float | None = 60.0) -> Result:
        return self.hosts.access.run(self.host, argv, timeout=timeout)

    def contains(self, path: str, needle: str) -> bool:
        return self.hosts.access.run(self.host, ["grep", "-q", "-F", needle, path], timeout=15).ok

    def fetch(self, path: str, local) -> None:
        self.hosts.access.get(self.host, path, local)


class LocalPlace:
    """Where a program of ours runs: this machine, inside what `argv_prefix` enters (the lab's switch
    namespace for a namespace host's wire; nothing for a VM's tap on the local hypervisor). Files are local."""

    def __init__(self, argv_prefix: Sequence[str], prefix, label: str):
        from pathlib import Path
        self.argv_prefix, self.prefix, self.label = list(argv_prefix), str(prefix), label
        Path(self.prefix, "log").mkdir(parents=True, exist_ok=True)

    def module_argv(self, module: str, *args: str) -> list[str]:
        import sys
        return [*self.argv_prefix, "env", f"TESTBED_PREFIX={self.prefix}", sys.executable, "-m", module, *args]

    def _agent(self, *args: str, timeout: float = 30.0) -> tuple[int, dict[str, Any]]:
        from orchestrator.localrun import run
        res = run(self.module_argv("hostagent", *args), timeout=timeout)
        try:
            data = json.loads(res.stdout.strip().splitlines()[-1]) if res.stdout.strip() else {}
        except ValueError:
            data = {}
        if res.exit_code not in (0, 1, 3) or (not data and res.exit_code != 0):
            raise AccessError(f"host agent on {self.label} failed ({res.exit_code}): {res.stderr.strip()[-300:]}")
        return res.exit_code, data

    def start(self, name: str, argv: Sequence[str], *, log: str | None = None, env=None) -> dict[str, Any]:
        code, data = self._agent("start", name, *(["--log", log] if log else []), "--", *argv)
        if code != 0:
            raise AccessError(f"{name} on {self.label} did not start: {data.get('error', '?')}")
        return data

    def stop(self, name: str, *, signal: str = "TERM", timeout: float = 10.0) -> dict[str, Any]:
        return self._agent("stop", name, "--signal", signal, "--timeout", str(timeout), timeout=timeout + 15)[1]

    def sh(self, script: str, timeout: float | None = 60.0) -> Result:
        return self.run([*self.argv_prefix, "sh", "-c", script], timeout=timeout)

    def run(self, argv: Sequence[str], timeout: float | None = 60.0) -> Result:
        """`argv` as given (module_argv already enters the place)."""
        from orchestrator.localrun import run
        return run(argv, timeout=timeout)

    def contains(self, path: str, needle: str) -> bool:
        try:
            with open(path, errors="replace") as fh:
                return needle in fh.read()
        except OSError:
            return False

    def fetch(self, path: str, local) -> None:
        import shutil
        shutil.copyfile(path, local)
