"""The kernel limits every namespace lab on a machine shares, sized before a lab is built, raised with a record,
and put back when the last lab that needed them is gone.

All of a machine's network namespaces share one kernel: one ARP (neighbour) table bounded by
`net.ipv4.neigh.default.gc_thresh2/3` (1024 entries by default — a 200-host lab overflowed it: "neighbor table
overflow", and `check` found 70/200 hosts working), one PID space (`kernel.pid_max`, `kernel.threads-max`,
the cgroup's `pids.max`), one file table (`fs.file-max`) and one conntrack limit per namespace
(`net.netfilter.nf_conntrack_max`, used by the throttle's rules). inotify is not listed: no process a lab runs
opens an instance (0 on a booted 200-host lab, measured), and the orchestrator's own open-file limit is
per-process (`open_files_needed`, raised by the provider for itself).

`needs(lab)` and `plan`/`release_plan` are pure arithmetic (unit-tested). `Registry` is the record, machine-wide
because the kernel is: `/run/worm-testbed/kernel-limits/` (a tmpfs, emptied at boot as the sysctls are reset),
one claim file per lab that is up — whatever its state directory — plus the original value of every limit a
lab raised and the value it set. A lab journals its claim before the claim is written and the claim before any
limit is raised, so a SIGKILLed `up` is undone by `down`; a claim whose lab record is gone is dropped.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.atomic import atomic_write_json, read_json
from orchestrator.errors import ProviderError
from orchestrator.labfile.topology import Lab

REGISTRY_DIR = Path("/run/worm-testbed/kernel-limits")

PIDS_PER_HOST = 16      # sshd, its sessions (Ansible, the orchestrator's commands), the throttle, the worm's
                        # servers and scanner, the host agent, tcpdump; a booted host runs 1
FILES_PER_HOST = 256    # a booted host holds ~32 open files (6,400 for 200 hosts, measured); trials hold more
FLOWS_PER_HOST = 256    # conntrack entries per experimental host at the busiest namespace (the gateway)
BASE_FILES = 256        # what the orchestrator holds besides one pipe trio per host while it builds


@dataclass(frozen=True)
class Limit:
    key: str            # the sysctl
    kind: str           # table: labs' entries add up in one machine-wide table, above the machine's own allowance
                        # headroom: what is in use now plus what the lab adds must fit
                        # namespace: each namespace counts on its own; the busiest one must fit
    may_raise: bool     # False: testbed never raises it (memory sizing is the machine owner's choice)
    cap: int            # the kernel's maximum
    what: str           # what the lab's figure counts, for messages


INT_MAX = 2**31 - 1
LIMITS = (
    Limit("net.ipv4.neigh.default.gc_thresh3", "table", True, INT_MAX,
          "ARP entries: every pair of hosts on a LAN they share"),
    Limit("net.ipv4.neigh.default.gc_thresh2", "table", True, INT_MAX,
          "ARP entries kept without garbage collection"),
    Limit("net.netfilter.nf_conntrack_max", "namespace", True, INT_MAX,
          f"tracked flows in the busiest namespace, {FLOWS_PER_HOST} per experimental host"),
    Limit("kernel.pid_max", "headroom", True, 4_194_304, f"tasks, {PIDS_PER_HOST} per host"),
    Limit("kernel.threads-max", "headroom", False, INT_MAX, f"tasks, {PIDS_PER_HOST} per host"),
    Limit("fs.file-max", "headroom", True, 2**63 - 1, f"open files, {FILES_PER_HOST} per host"),
)
BY_KEY = {lim.key: lim for lim in LIMITS}
CGROUP_PIDS = "pids.max"


# ---------------------------------------------------------------- sizing (pure)


def needs(lab: Lab) -> dict[str, int]:
    """What `lab` needs of each shared limit (and of its cgroup's pids.max), from its topology alone."""
    on: dict[str, int] = {}
    for h in lab.hosts:
        for i in h.interfaces:
            if i.ip:
                on[i.segment] = on.get(i.segment, 0) + 1
    pairs = sum(m * (m - 1) for m in on.values())     # an entry at each end of every pair that may talk
    exp_hosts = sum(1 for h in lab.hosts if any(i.ip and i.segment.startswith("experimental") for i in h.interfaces))
    tasks = len(lab.hosts) * PIDS_PER_HOST
    return {
        "net.ipv4.neigh.default.gc_thresh3": pairs,
        "net.ipv4.neigh.default.gc_thresh2": pairs,
        "net.netfilter.nf_conntrack_max": exp_hosts * FLOWS_PER_HOST,
        "kernel.pid_max": tasks,
        "kernel.threads-max": tasks,
        "fs.file-max": len(lab.hosts) * FILES_PER_HOST,
        CGROUP_PIDS: tasks,
    }


def open_files_needed(lab: Lab) -> int:
    """Open files the orchestrator itself holds at once while it builds `lab` (three pipes per host's `ip`)."""
    return BASE_FILES + 3 * len(lab.hosts)


@dataclass(frozen=True)
class Reading:
    value: int | None           # None: not readable here (e.g. not the machine's first network namespace)
    in_use: int | None = None   # for headroom limits: tasks, or allocated files
    writable: bool = True
    error: str = ""             # why it could not be read or written


@dataclass(frozen=True)
class Shortfall:
    key: str
    have: int
    want: int
    why: str                    # how `want` comes about
    reason: str                 # why it cannot be raised


def target(lim: Limit, reading: Reading, original: int | None, mine: int, others: list[int]) -> tuple[int, str]:
    """The value `lim` must have while this lab and the `others` (their needs) are up, and how it comes about."""
    if lim.kind == "table":
        base = original if original is not None else (reading.value or 0)
        return base + mine + sum(others), (f"this machine's {base} plus {mine} for this lab's {lim.what}"
                                           + (f" and {sum(others)} for {len(others)} other lab(s)" if others else ""))
    if lim.kind == "namespace":
        return max([mine, *others]), f"{lim.what}"
    used = reading.in_use or 0
    return used + mine, f"{used} in use plus {mine} for this lab's {lim.what}"


def plan(mine: dict[str, int], others: list[dict[str, int]], readings: dict[str, Reading],
         originals: dict[str, int]) -> tuple[dict[str, int], list[Shortfall], list[str]]:
    """(limits to raise and to what, the ones short that cannot be raised, notes) for bringing up a lab that
    needs `mine` beside labs that need `others`, given what the kernel reads now."""
    writes: dict[str, int] = {}
    short: list[Shortfall] = []
    notes: list[str] = []
    for lim in LIMITS:
        r = readings.get(lim.key, Reading(None, error="not read"))
        if r.value is None:
            if lim.key == "net.netfilter.nf_conntrack_max":
                continue                      # conntrack is not loaded: nothing in the lab uses it (yet)
            notes.append(f"{lim.key} could not be read ({r.error}); this lab needs {mine.get(lim.key, 0)} of it")
            continue
        want, why = target(lim, r, originals.get(lim.key), mine.get(lim.key, 0), [o.get(lim.key, 0) for o in others])
        if r.value >= want:
            continue
        if want > lim.cap:
            short.append(Shortfall(lim.key, r.value, want, why, f"the kernel's maximum is {lim.cap}"))
        elif not lim.may_raise:
            short.append(Shortfall(lim.key, r.value, want, why, "testbed does not raise it"))
        elif not r.writable:
            short.append(Shortfall(lim.key, r.value, want, why, f"it cannot be raised here ({r.error})"))
        else:
            writes[lim.key] = want
    pids = readings.get(CGROUP_PIDS)
    if pids is not None and pids.value is not None:
        free = pids.value - (pids.in_use or 0)
        if free < mine.get(CGROUP_PIDS, 0):
            short.append(Shortfall(CGROUP_PIDS, pids.value, (pids.in_use or 0) + mine[CGROUP_PIDS],
                                   f"{pids.in_use} tasks in use plus {mine[CGROUP_PIDS]} for this lab",
                                   f"it belongs to the service manager ({pids.error})"))
    return writes, short, notes


def release_plan(originals: dict[str, int], ours: dict[str, int], current: dict[str, int | None],
                 remaining: list[dict[str, int]]) -> tuple[dict[str, int], list[str], list[str]]:
    """(limits to write back, records to drop, notes) once a lab is gone and the labs needing `remaining` stay.
    The last lab out restores every original; before that a table limit comes down to what the rest need.
    A value someone else changed since testbed set it is left as it is, and its record dropped."""
    writes: dict[str, int] = {}
    drop: list[str] = []
    notes: list[str] = []
    for key, orig in originals.items():
        now = current.get(key)
        if now == orig and ours.get(key) != orig:      # recorded, but never written (a write failed or was cut)
            drop.append(key)
            continue
        if now != ours.get(key):
            drop.append(key)
            notes.append(f"{key} is {now}, not the {ours.get(key)} testbed set: left as it is")
            continue
        if not remaining:
            writes[key] = orig
            drop.append(key)
        elif BY_KEY.get(key) and BY_KEY[key].kind == "table":
            want = max(orig, orig + sum(r.get(key, 0) for r in remaining))
            if want < (now or 0):
                writes[key] = want
    return writes, drop, notes


def refusal(lab: str, short: list[Shortfall]) -> ProviderError:
    lines = [f"lab '{lab}' needs {s.key} ≥ {s.want} ({s.why}); it is {s.have} and {s.reason}" for s in short]
    fixes = [f"sysctl -w {s.key}={s.want}" if s.key != CGROUP_PIDS else
             f"raise the cgroup's pids.max to {s.want} (e.g. systemd TasksMax=)" for s in short]
    return ProviderError("; ".join(lines) + "; nothing was built",
                         hint=f"as root on this machine: {'; '.join(fixes)} — or build a smaller lab")


# ---------------------------------------------------------------- the kernel (I/O)


class Kernel:
    """Reads and writes the limits in /proc/sys (the machine's first network namespace: where testbed runs)."""

    def __init__(self, proc_sys: Path = Path("/proc/sys"), cgroup_root: Path = Path("/sys/fs/cgroup")):
        self.proc_sys, self.cgroup_root = proc_sys, cgroup_root

    def _path(self, key: str) -> Path:
        return self.proc_sys / key.replace(".", "/")

    def read(self, key: str) -> int | None:
        try:
            return int(self._path(key).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def write(self, key: str, value: int) -> None:
        self._path(key).write_text(f"{value}\n")

    def reading(self, key: str) -> Reading:
        p = self._path(key)
        try:
            value = int(p.read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            return Reading(None, error=f"{p}: {getattr(exc, 'strerror', None) or exc}")
        in_use = None
        if key in ("kernel.pid_max", "kernel.threads-max"):
            in_use = self.tasks()
        elif key == "fs.file-max":
            in_use = self.read("fs.file-nr")
        writable = os.access(p, os.W_OK) and not _read_only(p)
        return Reading(value, in_use, writable, "" if writable else f"{p} is read-only")

    def tasks(self) -> int:
        try:
            return int(Path("/proc/loadavg").read_text().split()[3].split("/")[1])
        except (OSError, ValueError, IndexError):
            return 0

    def cgroup_pids(self) -> Reading | None:
        """The tightest pids.max of this process's cgroup and its ancestors, with what they hold now."""
        try:
            lines = Path("/proc/self/cgroup").read_text().splitlines()
        except OSError:
            return None
        rel = next((ln.split(":", 2)[2] for ln in lines if ln.split(":")[1:2] == ["pids"]), None)
        base = self.cgroup_root / "pids"                            # cgroup v1
        if rel is None:
            rel = next((ln.split(":", 2)[2] for ln in lines if ln.startswith("0::")), None)
            base = self.cgroup_root                                  # cgroup v2
        if rel is None:
            return None
        best: Reading | None = None
        d = base / rel.lstrip("/")
        while True:
            try:
                mx = (d / "pids.max").read_text().strip()
                cur = int((d / "pids.current").read_text().strip())
                if mx != "max" and (best is None or best.value is None
                                    or int(mx) - cur < best.value - (best.in_use or 0)):
                    best = Reading(int(mx), cur, False, str(d / "pids.max"))
            except (OSError, ValueError):
                pass
            if d == base or base not in d.parents:
                return best
            d = d.parent


def _read_only(p: Path) -> bool:
    try:
        return bool(os.statvfs(p).f_flag & os.ST_RDONLY)
    except OSError:
        return True


# ---------------------------------------------------------------- the machine-wide record


class Registry:
    """Claims of the labs that are up (any state directory), and what testbed changed in the kernel."""

    def __init__(self, root: Path = REGISTRY_DIR, kernel: Kernel | None = None):
        self.root, self.kernel = Path(root), kernel or Kernel()

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _ledger(self) -> dict:
        try:
            d = read_json(self.root / "ledger.json")
            return {"original": dict(d.get("original", {})), "set": dict(d.get("set", {}))}
        except (OSError, ValueError):
            return {"original": {}, "set": {}}

    def _claims(self) -> dict[str, dict]:
        out = {}
        for f in sorted(self.root.glob("claim-*.json")):
            try:
                out[f.stem.removeprefix("claim-")] = read_json(f)
            except (OSError, ValueError):
                continue
        return out

    @staticmethod
    def new_claim(lab: str) -> str:
        return f"{lab}-{secrets.token_hex(4)}"

    def live(self, claim: dict, claim_id: str) -> bool:
        """A claim stands while its lab's record exists and journals it (else the lab was removed without it)."""
        try:
            rec = read_json(Path(claim["state_dir"]) / "labs" / claim["lab"] / "lab.json")
        except (OSError, ValueError, KeyError):
            return False
        return any(e.get("kind") == "kernel-limits" and e.get("name") == claim_id for e in rec.get("journal", []))

    def _prune(self, claims: dict[str, dict], keep: str | None = None) -> dict[str, dict]:
        for cid in [c for c in claims if c != keep and not self.live(claims[c], c)]:
            (self.root / f"claim-{cid}.json").unlink(missing_ok=True)
            del claims[cid]
        return claims

    def check(self, lab: str, mine: dict[str, int]) -> tuple[dict[str, int], list[str]]:
        """Raise ProviderError (nothing changed) if a limit is short and cannot be raised; else (the writes
        `acquire` would make now, notes). Call with the lock held."""
        ledger, claims = self._ledger(), self._prune(self._claims())
        readings = {lim.key: self.kernel.reading(lim.key) for lim in LIMITS}
        if (pids := self.kernel.cgroup_pids()) is not None:
            readings[CGROUP_PIDS] = pids
        writes, short, notes = plan(mine, [c["needs"] for c in claims.values()], readings, ledger["original"])
        if short:
            raise refusal(lab, short)
        return writes, notes

    def acquire(self, claim_id: str, lab: str, state_dir: Path, mine: dict[str, int],
                writes: dict[str, int]) -> list[str]:
        """Record the claim and make `check`'s writes (the lab has journalled `claim_id` already). Call with the
        lock held that `check` ran under. Returns what was changed, in words."""
        atomic_write_json(self.root / f"claim-{claim_id}.json",
                          {"lab": lab, "state_dir": str(state_dir), "needs": mine, "created": time.time()}, fsync=False)
        ledger = self._ledger()
        for key in writes:                    # original and new value are on record before the kernel is touched
            ledger["original"].setdefault(key, self.kernel.read(key))
            ledger["set"][key] = writes[key]
        self._save(ledger)
        changed = []
        for key, value in writes.items():
            before = self.kernel.read(key)
            try:
                self.kernel.write(key, value)
            except OSError as exc:
                raise ProviderError(f"raising {key} from {before} to {value} for lab '{lab}' failed: "
                                    f"{exc.strerror or exc}", hint=f"as root: sysctl -w {key}={value}") from None
            changed.append(f"{key} {before} -> {value}")
        return changed

    def release(self, claim_id: str) -> list[str]:
        """Drop a lab's claim; put back what no remaining lab needs. Returns what was changed, in words."""
        with self.locked():
            (self.root / f"claim-{claim_id}.json").unlink(missing_ok=True)
            return self._settle()

    def settle(self) -> list[str]:
        """Drop claims of labs that are gone and put back what nobody needs (also after a lost `down`)."""
        with self.locked():
            return self._settle()

    def _settle(self) -> list[str]:
        claims = self._prune(self._claims())
        ledger = self._ledger()
        if not ledger["original"]:
            return []
        current = {k: self.kernel.read(k) for k in ledger["original"]}
        writes, drop, notes = release_plan(ledger["original"], ledger["set"], current,
                                           [c["needs"] for c in claims.values()])
        changed = list(notes)
        for key, value in writes.items():
            try:
                self.kernel.write(key, value)
                changed.append(f"{key} {current[key]} -> {value}")
                ledger["set"][key] = value
            except OSError as exc:
                changed.append(f"{key}: could not be put back to {value} ({exc.strerror or exc})")
                drop = [k for k in drop if k != key]
        for key in drop:
            ledger["original"].pop(key, None)
            ledger["set"].pop(key, None)
        self._save(ledger)
        return changed

    def _save(self, ledger: dict) -> None:
        if ledger["original"]:
            atomic_write_json(self.root / "ledger.json", ledger, fsync=False)
        else:
            (self.root / "ledger.json").unlink(missing_ok=True)

    def state(self) -> dict:
        """For tests and `status`: {"original": …, "set": …, "claims": {id: claim}}."""
        with self.locked():
            return {**self._ledger(), "claims": self._prune(self._claims())}

