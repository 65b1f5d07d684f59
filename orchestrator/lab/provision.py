"""Provisioning lab hosts with Ansible (ansible-runner), the same playbooks for every provider.

Each run gets a private data directory under the lab's state (inventory, extravars, env, artifacts); Ansible's
own state (ANSIBLE_HOME, local temp, SSH control sockets) stays there too. Ansible's ssh runs where the
provider says control traffic stands (a wrapper around `ssh`), with the lab's key and pinned known_hosts.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
import os
import secrets
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.atomic import atomic_write_bytes
from orchestrator.errors import ProvisionError, UsageError
from orchestrator.labfile import isolation
from orchestrator.labfile.topology import Lab
from orchestrator.providers import get_provider
from orchestrator.providers.base import Provider
from orchestrator.providers.keys import lab_keys
from orchestrator.providers.state import StateStore

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"
ROLES = ("common", "testworm", "throttle", "sniffer", "gateway", "injector")
# which inventory groups each role configures (as in playbooks/site.yml)
ROLE_GROUPS = {"common": None, "testworm": ("blade", "target"), "throttle": ("blade", "gateway"),
               "sniffer": ("sniffer",), "gateway": ("gateway",), "injector": ("injector",)}
CODE_PACKAGES = ("hostagent", "testworm", "throttle", "mechanisms", "netfilterqueue", "workload")
GATEWAY_EMPTY = ("reset", "blackhole")
KEEP_RUNS = 3


@dataclass
class ProvisionReport:
    lab: str
    roles: list[str]
    duration_s: float
    changed: dict[str, int]                         # host -> tasks that changed something
    role_seconds: dict[str, float] = field(default_factory=dict)   # wall time per role
    private_data_dir: str = ""

    @property
    def total_changed(self) -> int:
        return sum(self.changed.values())


# ---------------------------------------------------------------- what the playbooks are given (pure)


def code_bundle() -> tuple[dict[str, str], list[str]]:
    """Every file of the packages hosts run (the worm, the throttle, its NFQUEUE binding), base64 by path.
    The binding is CPython 3.11/x86_64, as Debian 12's python3 on lab hosts and guests."""
    files: dict[str, str] = {}
    packages = []
    for pkg in CODE_PACKAGES:
        spec = importlib.util.find_spec(pkg)
        if spec is None or not spec.submodule_search_locations:
            continue
        root = Path(next(iter(spec.submodule_search_locations)))
        packages.append(pkg)
        for p in sorted(root.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix in (".py", ".so", ".json", ".txt"):
                files[f"{pkg}/{p.relative_to(root)}"] = base64.b64encode(p.read_bytes()).decode()
    return files, packages


def worm_key(store: StateStore, lab: str) -> bytes:
    """The lab's shared secret for authenticated worm triggers (created once, 0600)."""
    path = store.lab_dir(lab) / "worm.key"
    if not path.exists():
        atomic_write_bytes(path, secrets.token_hex(32).encode() + b"\n", mode=0o600)
    return path.read_bytes()


def group_name(role: str) -> str:
    return role.replace("-", "_")      # Ansible group names may not contain dashes


def inventory(lab: Lab, provider: Provider) -> dict[str, Any]:
    hosts: dict[str, Any] = {}
    groups: dict[str, Any] = {}
    exp_subnets = [s.subnet for s in lab.experimental_segments()]
    reachable = set(provider.ssh_hosts(lab))
    for h in lab.hosts:
        if h.name not in reachable:
            continue
        hv = provider.host_vars(lab.name, h)
        host_json = {
            "lab": lab.name, "host": h.name, "role": h.role, "prefix": hv["testbed_prefix"],
            "python": hv["testbed_python"], "experimental_subnets": exp_subnets,
            "interfaces": {i.segment: {"ifname": i.ifname, "address": i.address, "mac": i.mac, "mirror": i.mirror}
                           for i in h.interfaces},
        }
        rules = isolation.ruleset(h)
        hosts[h.name] = {
            "ansible_host": h.ip("admin"), "ansible_user": "root", **hv,
            "testbed_role": h.role, "testbed_host_json": host_json,
            "testbed_isolation_nft": {isolation.TABLE: rules} if rules else {},
            "testbed_mirror_ifaces": [i.ifname for i in h.interfaces if i.mirror],
        }
        if h.role == "gateway":
            hosts[h.name]["testbed_gateway_sysctls"] = {
                "net.ipv4.ip_forward": "1",
                **{f"net.ipv4.conf.{i.ifname}.forwarding": "1" if i.segment.startswith("experimental") else "0"
                   for i in h.interfaces}}
        groups.setdefault(group_name(h.role), {"hosts": {}})["hosts"][h.name] = {}
    return {"all": {"hosts": hosts, "children": groups}}


def gateway_ruleset(lab: Lab, empty: str) -> str:
    """On the gateway: a scan of an address where no lab host is gets an RST (or nothing at all), so the
    worm's SYNs really cross the wire and its sockets do not pile up waiting."""
    present = sorted({i.ip for h in lab.hosts for i in h.interfaces if i.ip and i.segment.startswith("experimental")})
    tcp = "reject with tcp reset" if empty == "reset" else "drop"
    udp = "reject with icmp type port-unreachable" if empty == "reset" else "drop"
    return ("table inet wt_gateway {\n"
            f"  set lab_hosts {{ type ipv4_addr; elements = {{ {', '.join(present)} }} }}\n"
            # priority 10: after iptables' filter FORWARD (0), so a throttle on the gateway decides first
            "  chain forward {\n    type filter hook forward priority 10; policy accept;\n"
            f"    iifname \"exp*\" ip daddr != @lab_hosts meta l4proto tcp {tcp}\n"
            f"    iifname \"exp*\" ip daddr != @lab_hosts meta l4proto udp {udp}\n"
            "  }\n}\n")


def extravars(lab: Lab, store: StateStore, *, gateway_empty: str = "reset") -> dict[str, Any]:
    files, packages = code_bundle()
    return {
        "testbed_lab": lab.name,
        "testbed_code": files,
        "testbed_code_packages": packages,
        "testbed_worm_key_b64": base64.b64encode(worm_key(store, lab.name)).decode(),
        "testbed_gateway_nft": gateway_ruleset(lab, gateway_empty),
        "testbed_gateway_empty": gateway_empty,
    }


def control_dir(store: StateStore, lab: str) -> Path:
    """Ansible's SSH control sockets: a short path (ssh limits them to ~100 bytes), unique per lab."""
    tag = hashlib.sha256(str(store.lab_dir(lab).resolve()).encode()).hexdigest()[:10]
    return Path("/tmp") / f"wtcp-{tag}"


def envvars(store: StateStore, lab: str, pdd: Path, ssh_wrapper: Path) -> dict[str, str]:
    keys = lab_keys(store, lab)
    ssh_args = (f"-o ControlMaster=auto -o ControlPersist=120s -o UserKnownHostsFile={keys.known_hosts} "
                "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes "
                f"-o IdentityFile={keys.private_key} -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=10 "
                "-o RequestTTY=no")
    venv_bin = str(Path(sys.executable).parent)
    return {
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}",
        "ANSIBLE_HOME": str(pdd / "ansible-home"),
        "ANSIBLE_LOCAL_TEMP": str(pdd / "tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir(store, lab)),
        "ANSIBLE_SSH_ARGS": ssh_args,
        "ANSIBLE_SSH_EXECUTABLE": str(ssh_wrapper),
        "ANSIBLE_SFTP_EXECUTABLE": str(ssh_wrapper.with_name("sftp")),
        "ANSIBLE_SCP_EXECUTABLE": str(ssh_wrapper.with_name("scp")),
        "ANSIBLE_PIPELINING": "True",
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_DEPRECATION_WARNINGS": "False",
        "ANSIBLE_SYSTEM_WARNINGS": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_TIMEOUT": "15",
    }


# ---------------------------------------------------------------- running


def _prepare(store: StateStore, lab: Lab, provider: Provider) -> Path:
    runs = store.lab_dir(lab.name) / "provision"
    runs.mkdir(parents=True, exist_ok=True)
    old = sorted(p for p in runs.iterdir() if p.is_dir())
    for p in old[:-(KEEP_RUNS - 1) or None] if len(old) >= KEEP_RUNS else []:
        shutil.rmtree(p, ignore_errors=True)
    pdd = runs / time.strftime("%Y%m%d-%H%M%S") if not (runs / time.strftime("%Y%m%d-%H%M%S")).exists() \
        else runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
    (pdd / "bin").mkdir(parents=True)
    (pdd / "tmp").mkdir()
    os.chmod(pdd, 0o700)
    proxy = provider.control_proxy(lab.name)
    prefix = " ".join(provider.control_argv(lab.name))
    for tool in ("ssh", "sftp", "scp"):
        w = pdd / "bin" / tool
        # on another machine's admin LAN ssh still runs here (its arguments name local files), through a proxy
        cmd = f"{tool} -o {shlex.quote('ProxyCommand=' + proxy)}" if proxy else f"{prefix} {tool}"
        w.write_text(f"#!/bin/sh\n# {tool} from where the lab's control traffic stands\nexec {cmd} \"$@\"\n")
        os.chmod(w, 0o755)
    cdir = control_dir(store, lab.name)
    cdir.mkdir(mode=0o700, exist_ok=True)
    return pdd


def _selected(roles: list[str] | None) -> list[str]:
    if not roles:
        return list(ROLES)
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        raise UsageError(f"unknown role(s) {', '.join(unknown)}; known roles: {', '.join(ROLES)}")
    return roles


@dataclass(frozen=True)
class MechanismRole:
    """An experiment's mechanism to install beside the site's roles: its Ansible role (a directory) on the hosts
    that carry it (over the admin LAN, as every role)."""

    name: str
    path: Path
    hosts: tuple[str, ...]


def mechanisms_playbook(extra: list[MechanismRole]) -> str:
    """site.yml, then one play per mechanism role (tagged `mechanisms`), as a playbook of the run (YAML as
    JSON: no quoting to get wrong)."""
    plays: list[dict[str, Any]] = [{"import_playbook": str(PLAYBOOKS / "site.yml")}]
    for m in extra:
        plays.append({"name": f"The mechanism {m.name}", "hosts": ":".join(m.hosts), "gather_facts": False,
                      "roles": [{"role": str(m.path), "tags": ["mechanisms", m.name]}]})
    return json.dumps(plays, indent=2) + "\n"


def expected_results(lab: Lab, roles: list[str], hosts: list[str]) -> int:
    """How many host×task results a run produces (one task per role), for the progress bar."""
    n = 0
    for role in roles:
        groups = ROLE_GROUPS[role]
        n += sum(1 for h in lab.hosts if h.name in hosts and (groups is None or group_name(h.role) in groups))
    return n


def provision_lab(name: str, *, roles: list[str] | None = None, store: StateStore | None = None,
                  gateway_empty: str = "reset", console=None,
                  on_event: Callable[[str, int, int], None] | None = None,
                  mechanisms: list[MechanismRole] | None = None) -> ProvisionReport:
    """Run playbooks/site.yml (the selected roles) against every host of lab `name`, and the roles of an
    experiment's `mechanisms` (each on the hosts that carry it) in the same run."""
    import ansible_runner

    store = store or StateStore()
    rec = store.require(name)
    lab = rec.topology
    provider = get_provider(rec.provider, store)
    roles = _selected(roles)
    if gateway_empty not in GATEWAY_EMPTY:
        raise UsageError(f"gateway_empty is one of {', '.join(GATEWAY_EMPTY)}")
    pdd = _prepare(store, lab, provider)
    total = expected_results(lab, roles, provider.ssh_hosts(lab)) + sum(len(m.hosts) for m in mechanisms or [])
    playbook = "site.yml"
    if mechanisms:
        playbook = str(pdd / "mechanisms.yml")
        (pdd / "mechanisms.yml").write_text(mechanisms_playbook(mechanisms))
    done = 0
    failures: list[str] = []
    changed: dict[str, int] = {h: 0 for h in provider.ssh_hosts(lab)}
    role_span: dict[str, list[float]] = {}
    current = {"task": ""}
    bar = _Bar(console, total) if console is not None and on_event is None else None

    def handler(ev: dict) -> bool:
        nonlocal done
        kind, data = ev.get("event", ""), ev.get("event_data", {})
        if kind == "playbook_on_task_start":
            current["task"] = data.get("task", "")
        if kind in ("runner_on_ok", "runner_on_failed", "runner_on_unreachable", "runner_on_skipped"):
            done += 1
            role = data.get("role") or "?"
            now = time.monotonic()
            span = role_span.setdefault(role, [now, now])
            span[1] = now
            res = data.get("res", {}) or {}
            host = data.get("host", "?")
            if kind == "runner_on_ok" and res.get("changed"):
                changed[host] = changed.get(host, 0) + 1
            if kind == "runner_on_failed" and not data.get("ignore_errors"):
                failures.append(f"{host}: task '{data.get('task', '?')}' failed: {_message(res)}")
            if kind == "runner_on_unreachable":
                failures.append(f"{host}: unreachable over SSH: {_message(res)}")
            if on_event:
                on_event(current["task"], done, total)
            if bar:
                bar.update(current["task"], done)
        if kind == "playbook_on_task_start" and data.get("role"):
            role_span.setdefault(data["role"], [time.monotonic(), time.monotonic()])
        return True

    started = time.monotonic()
    # ansible-runner installs its own SIGINT/SIGTERM handlers and never puts the caller's back
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        r = ansible_runner.run(
            private_data_dir=str(pdd), project_dir=str(PLAYBOOKS), playbook=playbook,
            inventory=inventory(lab, provider), extravars=extravars(lab, store, gateway_empty=gateway_empty),
            envvars=envvars(store, name, pdd, pdd / "bin" / "ssh"),
            tags=",".join([*roles, *(["mechanisms"] if mechanisms else [])]) if set(roles) != set(ROLES) else None,
            forks=max(1, min(50, len(changed))), quiet=True, event_handler=handler, rotate_artifacts=KEEP_RUNS,
            ident="run",
        )
    finally:
        for sig, previous in saved.items():
            signal.signal(sig, previous)
        if bar:
            bar.close()
    duration = time.monotonic() - started
    if failures or r.rc != 0:
        detail = "; ".join(failures[:6]) or f"ansible-playbook exited {r.rc} ({r.status})"
        more = f" (and {len(failures) - 6} more)" if len(failures) > 6 else ""
        raise ProvisionError(f"provisioning lab '{name}' failed: {detail}{more}",
                             hint=f"hosts that passed are configured; full log: {pdd}/artifacts/run/stdout")
    return ProvisionReport(name, roles, duration, changed,
                           {role: span[1] - span[0] for role, span in role_span.items()}, str(pdd))


def _message(res: dict) -> str:
    msg = res.get("msg") or res.get("stderr") or res.get("module_stderr") or ""
    msg = str(msg).strip().splitlines()
    return msg[-1][:300] if msg else "no message"


class _Bar:
    def __init__(self, console, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
        self.p = Progress(TextColumn("[bold]provisioning"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True,
                          disable=not console.is_terminal)
        self.p.start()
        self.t = self.p.add_task("", total=total)

    def update(self, task: str, done: int) -> None:
        self.p.update(self.t, completed=done, description=task)

    def close(self) -> None:
        self.p.stop()


def describe(rep: ProvisionReport) -> str:
    roles = ", ".join(f"{r} {s:.1f} s" for r, s in rep.role_seconds.items())
    return (f"provisioned lab {rep.lab} in {rep.duration_s:.1f} s: {rep.total_changed} change(s) on "
            f"{sum(1 for v in rep.changed.values() if v)} host(s); per role: {roles}")


def report_json(rep: ProvisionReport) -> str:
    return json.dumps(rep.__dict__, indent=2)
