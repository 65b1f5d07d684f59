"""A fake provider and a fake host set, so the run path (run_trial, run_experiment) is tested without root,
a kernel's namespaces, SSH or Ansible.

`FakeProvider` builds nothing: it journals one pretend resource per host and says its hosts share a clock.
`FakeHosts` stands where `LabHosts` does: every host is a directory under `root` (its install prefix), the
host agent's services are records whose `.exit` files `kill` writes, and the few programs a trial runs are
played by Python: the worm server, the injector's trigger (a scanner that makes `attempts` SYNs at the
trial's rate and stops at its bound), tcpdump (a pcap of exactly those SYNs, written when it is stopped),
the canary. Shell snippets the trial sends (the watch's polls, `rm`, `ls | tail`) run for real with
/bin/sh — but only when every command in them is on a short list and every absolute path is under `root`;
anything else fails the test. Nothing here sends a packet.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from orchestrator.experiment.capture import _FIND, _SEND
from orchestrator.experiment.trial import _NORMAL, CAPTURE
from orchestrator.labfile.topology import Lab
from orchestrator.localrun import Result
from orchestrator.providers.base import Clock, HostStatus, LabStatus, Prerequisite, Provider, Resource
from orchestrator.providers.state import LabRecord
from tests.analysis.capgen import frames, syn, write_pcap

SAFE = {"echo", "cat", "grep", "tail", "sed", "ls", "head", "xargs", "rm", "mkdir", "stat", ":", "true"}
T0 = 1_764_000_000.0       # the fake lab's wall clock before a trigger (then: the real clock, as on a lab)


class FakeProvider(Provider):
    """A provider that makes nothing but its records (registered as "fake" by the tests that use it)."""

    name = "fake"

    def prerequisites(self, lab: Lab | None = None) -> list[Prerequisite]:
        return [Prerequisite("nothing", True, "the fake provider needs nothing")]

    def create(self, lab: Lab, progress=None) -> None:
        with self.store.locked(lab.name):
            self.refuse_existing(lab.name)
            rec = LabRecord(lab.name, "fake", "creating", lab.to_dict())
            self.store.journal(rec, "process", [f"fake-{h.name}" for h in lab.hosts])
            rec.state = "up"
            self.store.save(rec)

    def _teardown(self, rec: LabRecord, progress) -> list[Resource]:
        removed = [Resource("process", n, True) for n in rec.owns("process")]
        self.store.remove(rec.name)
        return removed

    def resources(self, name: str) -> list[Resource]:
        rec = self.store.require(name)
        return [Resource("process", n, True) for n in rec.owns("process")]

    def status(self, name: str) -> LabStatus:
        rec = self.store.require(name)
        return LabStatus(name, "fake", rec.state, rec.topology.source, rec.created,
                         [HostStatus(h.name, h.role, "up") for h in rec.topology.hosts])

    def exec(self, name, host, argv, *, timeout=60.0, input=None, capture=True) -> Result:
        raise AssertionError("the fake provider runs nothing out-of-band")

    def control_socket(self, name, address, port, timeout):
        raise AssertionError("the fake provider has no control network")

    def control_argv(self, name: str) -> list[str]:
        return []

    def clock(self, rec: LabRecord) -> Clock:
        return Clock(shared=True)


class FakeAccess:
    """What `LabHosts.access` offers the run path: run a command on a host, fetch a file, the provider."""

    def __init__(self, hosts: FakeHosts, provider: Provider):
        self.hosts, self.provider, self.store = hosts, provider, provider.store

    def run(self, host: str, argv, timeout: float | None = 60.0, *, check: bool = False,
            input: str | None = None) -> Result:
        res = self.hosts.command(host, list(argv))
        if check:
            res.check()
        return res

    def get(self, host: str, remote: str, local) -> None:
        self.hosts.inside(remote)
        shutil.copyfile(remote, local)


class FakeHosts:
    """The host set of one lab, played locally (see the module's docstring). `attempts` is how many SYNs the
    worm's scanner makes before it stops at its own bound; `kill[(host, service)] = status` makes that
    service die with `status` once the worm has been triggered."""

    def __init__(self, lab: Lab, root: Path, provider: Provider, *, attempts: int = 12):
        self.lab, self.root, self.attempts = lab, Path(root), attempts
        self.access = FakeAccess(self, provider)
        self.services: dict[tuple[str, str], dict[str, Any]] = {}
        self.log: list[tuple[str, str]] = []          # (host, what): what the trial asked of each host
        self.kill: dict[tuple[str, str], int] = {}
        self.canary: set[str] = set()
        self.sent: list[tuple[float, str, int, int]] = []     # the worm's attempts: (t, dst, sport, dport)
        self.src = ""
        self.normal: list[str] = []
        self.t0 = T0
        self.capture_offset_s = 0.0       # the sniffer's clock ahead of the worm's (a VM keeps its own)
        self.capture_sport_shift = 0      # capture's source ports off the worm's log: nothing can be matched
        for h in lab.hosts:
            (self.root / h.name).mkdir(parents=True, exist_ok=True)

    # -- what LabHosts offers

    def prefix(self, host: str) -> str:
        return str(self.root / host)

    def python(self, host: str) -> str:
        return "python3"

    def module_argv(self, host: str, module: str, *args: str) -> list[str]:
        return ["fake-module", module, *args]

    def start(self, host: str, name: str, argv, *, env=None, log: str | None = None) -> dict[str, Any]:
        log = log or f"{self.prefix(host)}/log/{name}.log"
        self.inside(log)
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).touch()
        self.services[(host, name)] = {"argv": list(argv), "log": log}
        self.log.append((host, f"start {name}"))
        if name == CAPTURE:
            Path(log).write_text("tcpdump: listening on fake0\n")
        elif "--events" in argv:            # a mechanism's daemon (the throttle, trw): up once it logs its config
            events = argv[argv.index("--events") + 1]
            self._jsonl(events, [{"event": "config", "t_mono": 1.0, "t_wall": time.time()}])
        return {"name": name, "pid": 1}

    def stop(self, host: str, name: str, *, signal: str = "TERM", timeout: float = 10.0) -> dict[str, Any]:
        svc = self.services.pop((host, name), None)
        self.log.append((host, f"stop {name}"))
        if svc is None:
            return {"name": name, "running": False, "exit": None}
        ended = Path(self.prefix(host), "run", "svc", f"{name}.exit")
        if ended.exists():
            return {"name": name, "running": False, "exit": int(ended.read_text())}
        if name == CAPTURE:
            self._write_capture(host, svc)
        return {"name": name, "stopped": True, "signal": signal, "exit": 0}

    def read(self, host: str, path: str, *, tail: int | None = None) -> str:
        self.inside(path)
        return Path(path).read_text() if Path(path).exists() else ""

    def sh(self, host: str, script: str, timeout: float | None = 60.0) -> Result:
        if "fake-module testworm trigger" in script:
            trigger, _, then = script.partition(" && ")
            self._trigger(host, shlex.split(trigger))
            self.log.append((host, then))
            return Result(["sh", "-c", script], 0, "", "")
        if "fake-module throttle mark" in script:        # the throttle logs what it holds (the normal traffic)
            return self._mark(host, script)
        if script.startswith("ip link set "):
            self.log.append((host, script))
            return Result(["sh", "-c", script], 0, "", "")
        if script.startswith("cat /proc/sys/net/ipv4/"):
            return Result(["sh", "-c", script], 0, "", "")
        self._guard(script)
        p = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=timeout or 15)
        return Result(["sh", "-c", script], p.returncode, p.stdout, p.stderr)

    # -- the programs, played

    def command(self, host: str, argv: list[str]) -> Result:
        self.log.append((host, " ".join(argv[:3])))
        ok = Result(argv, 0, "", "")
        if argv[:2] == ["python3", "-c"] and argv[2] == _SEND:
            self.canary.add(argv[5])
            return ok
        if argv[:2] == ["python3", "-c"] and argv[2] == _FIND:
            return ok if argv[4] in self.canary else Result(argv, 1, "", "")
        if argv[:2] == ["python3", "-c"] and argv[2] == _NORMAL:
            self.normal = list(argv[4:])       # the host's normal traffic: nothing to send, but the throttle
            return ok                          # would now hold these destinations
        if argv[:3] == ["grep", "-q", "-F"]:
            self.inside(argv[4])
            found = Path(argv[4]).exists() and argv[3] in Path(argv[4]).read_text()
            return Result(argv, 0 if found else 1, "", "")
        if argv[:2] == ["fake-module", "throttle"] or argv[:2] == ["fake-module", "mechanisms.ratelimit"]:
            return ok                          # `clear`, and the rate limiter's rules: applied, cleared
        raise AssertionError(f"the fake host {host} does not know how to run {argv[:4]}")

    def _mark(self, host: str, script: str) -> Result:
        svc = self.services[(host, "throttle")]["argv"]
        n = int(svc[svc.index("--working-set") + 1])
        held = {"working_set": self.normal, "queue_len": 0, "blocked": False,
                "state": "fresh" if not self.normal else "full" if len(self.normal) >= n else "partial"}
        blades = [i.ip for h in self.lab.hosts if h.role == "blade" for i in h.interfaces if i.ip]
        line = {"event": "state", "t_mono": 9.0, "t_wall": T0 - 0.5, "why": "worm",
                "sources": {ip: held for ip in blades} if self.normal else {},
                "default": {"working_set": [], "state": "fresh"}}
        self._jsonl(svc[svc.index("--events") + 1], [line])
        self.log.append((host, "throttle mark"))
        return Result(["sh", "-c", script], 0, json.dumps(line) + "\n", "")

    def _trigger(self, injector: str, argv: list[str]) -> None:
        opt = {argv[i]: argv[i + 1] for i in range(len(argv) - 1) if argv[i].startswith("--")}
        infected = next(h.name for h in self.lab.hosts if any(i.ip == argv[3].split(":")[0] for i in h.interfaces))
        src = argv[3].split(":")[0]
        rate, proto, port = float(opt["--rate"]), opt["--protocol"], int(opt["--port"])
        n = min(self.attempts, int(opt["--max-attempts"]))
        server = self.services[(infected, "worm-server")]["argv"]
        state = Path(server[server.index("--state-dir") + 1])
        self.inside(str(state))
        base = opt["--targets"].split("/")[0].rsplit(".", 1)[0]
        # the worm's clock is the lab's (the real one: a trial's end is measured on it), its attempts sent at once
        t0 = self.t0 = time.time()
        self.sent = []                 # this trial's (the capture of the next holds only its own)
        lines = [{"event": "start", "t_mono": 10.0, "t_wall": t0, "pid": 2, "generation": 0,
                  "params": {"rate": rate, "protocol": proto, "port": port}}]
        for i in range(n):
            t = 10.0 + (i + 1) / rate
            dst, sport = f"{base}.{10 + i}", 40000 + i
            self.sent.append((t0 + t - 10.0, dst, sport, port))
            lines.append({"event": "attempt", "i": i, "t_mono": t, "t_wall": t0 + t - 10.0, "due_mono": t,
                          "t_done_mono": t + 1, "src": src, "sport": sport, "dst": dst, "dport": port,
                          "protocol": proto, "outcome": "timeout", "generation": 0})
        end = 10.0 + (n + 1) / rate
        lines.append({"event": "stop", "t_mono": end, "t_wall": t0 + end - 10.0, "reason": "max_attempts",
                      "attempts": n})
        self._jsonl(str(state / "scan-1.jsonl"), lines)
        self._jsonl(str(state / "server.jsonl"), [{"event": "scan_exit", "returncode": 0}])
        self.src = src
        for (host, name), status in self.kill.items():
            ended = Path(self.prefix(host), "run", "svc", f"{name}.exit")
            ended.parent.mkdir(parents=True, exist_ok=True)
            ended.write_text(f"{status}\n")
            Path(self.services[(host, name)]["log"]).write_text(f"{name}: fake death with status {status}\n")

    def _write_capture(self, host: str, svc: dict[str, Any]) -> None:
        argv = svc["argv"]
        pcap = argv[argv.index("-w") + 1]
        self.inside(pcap)
        Path(pcap).parent.mkdir(parents=True, exist_ok=True)
        pkts = [syn(self.src, dst, sport + self.capture_sport_shift, dport) for _, dst, sport, dport in self.sent]
        for p, (t, *_rest) in zip(pkts, self.sent, strict=True):
            p.time = t + self.capture_offset_s
        write_pcap(Path(pcap), frames(pkts))
        n = len(pkts)
        Path(svc["log"]).write_text(f"tcpdump: listening on fake0\n{n} packets captured\n"
                                    f"{n} packets received by filter\n0 packets dropped by kernel\n")

    # -- safety

    def inside(self, path: str) -> None:
        if not Path(path).resolve().is_relative_to(self.root.resolve()):
            raise AssertionError(f"the fake hosts touch only their own directories, not {path}")

    def _guard(self, script: str) -> None:
        for part in re.split(r"\|\||&&|[;|\n]", script):
            words = shlex.split(part.strip()) if part.strip() else []
            if not words:
                continue
            cmds = [words[0]] + ([w for w in words[1:] if not w.startswith("-")][:1] if words[0] == "xargs" else [])
            if any(c not in SAFE for c in cmds):
                raise AssertionError(f"the fake hosts refuse to run {part.strip()!r}")
            if words[0] == "rm" and not all(w.startswith(("-", "/")) for w in words[1:]):
                raise AssertionError(f"the fake hosts remove only absolute paths under their root: {part.strip()!r}")
            for w in words:
                for path in re.findall(r"(?:^|[>=])(/[^\s'\"]*)", w):
                    if path != "/dev/null":
                        self.inside(path.rstrip("*").rsplit("/scan-", 1)[0])

    def _jsonl(self, path: str, objs: list[dict[str, Any]]) -> None:
        self.inside(path)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.writelines(json.dumps(o, separators=(",", ":")) + "\n" for o in objs)     # as ours write it
