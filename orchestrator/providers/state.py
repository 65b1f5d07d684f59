"""Where labs remember themselves: one directory per lab under the state root, holding a snapshot of the
resolved lab and a journal of every resource a provider made (written *before* each step), per-host state
directories, and the lab's keys. `down NAME` needs nothing else, even after the orchestrator was killed —
also when it was killed while writing the lab's first record (the directory then holds only that record's
temporary file, and nothing else exists yet: every resource is journaled before it is made).

The state root is /var/lib/worm-testbed unless TESTBED_STATE_DIR says otherwise (tests use a private one).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from orchestrator.atomic import atomic_write_json, read_json
from orchestrator.errors import LabNotFoundError, ProviderError, UsageError
from orchestrator.labfile.constants import NAME_PATTERN
from orchestrator.labfile.topology import Lab

DEFAULT_ROOT = "/var/lib/worm-testbed"
RECORD_TMP = re.compile(r"\.lab\.json\..+\.tmp")     # atomic_write_json's temporary file of lab.json


def state_root() -> Path:
    return Path(os.environ.get("TESTBED_STATE_DIR", DEFAULT_ROOT))


LabState = Literal["up", "creating", "failed", "destroying", "degraded"]   # degraded: only in a status


@dataclass
class LabRecord:
    name: str
    provider: str
    state: LabState
    lab: dict[str, Any]             # topology.Lab.to_dict()
    journal: list[dict[str, str]] = field(default_factory=list)  # [{"kind": "netns", "name": …}, …]
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    owner_pid: int = field(default_factory=os.getpid)
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # provider-specific notes

    @property
    def topology(self) -> Lab:
        return Lab.from_dict(self.lab)

    def owns(self, kind: str) -> list[str]:
        return [e["name"] for e in self.journal if e["kind"] == kind]


class StateStore:
    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root) if root is not None else state_root()

    @property
    def labs_dir(self) -> Path:
        return self.root / "labs"

    def lab_dir(self, name: str) -> Path:
        if not re.fullmatch(NAME_PATTERN, name):        # never a path out of labs/ (`down ../..`)
            raise UsageError(f"'{name}' is not a lab name (1-24 lower-case letters, digits and dashes, "
                             "starting with a letter)")
        return self.labs_dir / name

    def host_dir(self, lab: str, host: str) -> Path:
        return self.lab_dir(lab) / "hosts" / host

    def _dirs(self) -> list[Path]:
        if not self.labs_dir.is_dir():
            return []
        return sorted(p for p in self.labs_dir.iterdir() if re.fullmatch(NAME_PATTERN, p.name) and p.is_dir())

    def names(self) -> list[str]:
        return [p.name for p in self._dirs() if (p / "lab.json").is_file()]

    def unborn(self) -> list[str]:
        """Lab directories without a record: a command was killed while writing the lab's first one."""
        return [p.name for p in self._dirs() if not (p / "lab.json").exists()]

    def lock_names(self) -> list[str]:
        """Labs with a lock file: held or waited for right now, or left by a command that was killed."""
        d = self.root / "locks"
        return sorted(p.stem for p in d.glob("*.lock") if re.fullmatch(NAME_PATTERN, p.stem)) if d.is_dir() else []

    def has_traces(self, name: str) -> bool:
        """Whether lab `name` left anything here: its directory, or its lock file."""
        return self.lab_dir(name).exists() or self._lock_path(name).exists()

    def remove_unborn(self, name: str) -> list[str] | None:
        """Remove the directory of a lab that has no record (call with the lab's lock held). It may hold only
        the temporary file of a first record never renamed into place: nothing of the lab can exist, as every
        resource is journaled before it is made. Returns what it held; None when there is no such directory.
        Anything else in it is not ours to remove: ProviderError."""
        d = self.lab_dir(name)
        if not d.is_dir() or (d / "lab.json").exists():
            return None
        held = sorted(p.name for p in d.iterdir())
        other = [n for n in held if not RECORD_TMP.fullmatch(n)]
        if other:
            raise ProviderError(f"{d} holds no lab record (lab.json) but {', '.join(other[:5])}"
                                f"{' …' if len(other) > 5 else ''}: not what an interrupted command leaves; "
                                "inspect it and remove it by hand")
        shutil.rmtree(d)
        return held

    def load(self, name: str) -> LabRecord | None:
        path = self.lab_dir(name) / "lab.json"
        try:
            return LabRecord(**read_json(path))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise ProviderError(f"the state file {path} is damaged ({exc}); inspect it, "
                                "or remove the lab's resources by hand") from None

    def require(self, name: str) -> LabRecord:
        rec = self.load(name)
        if rec is None:
            raise LabNotFoundError(f"no lab named '{name}' is known here (state directory {self.root})")
        return rec

    def save(self, rec: LabRecord) -> None:
        rec.updated = time.time()
        atomic_write_json(self.lab_dir(rec.name) / "lab.json", rec.__dict__)

    def journal(self, rec: LabRecord, kind: str, names: list[str]) -> None:
        """Record resources *before* creating them, so an interrupted step is still cleaned up."""
        have = {(e["kind"], e["name"]) for e in rec.journal}
        rec.journal.extend({"kind": kind, "name": n} for n in names if (kind, n) not in have)
        self.save(rec)

    def remove(self, name: str) -> None:
        """Remove a lab's directory, its record (lab.json) last: a removal killed half-way leaves the record,
        for `down` to finish the job, or an empty directory (which `down` removes as unborn)."""
        d = self.lab_dir(name)
        if not d.is_dir():
            return
        for p in d.iterdir():
            if p.name == "lab.json":
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        (d / "lab.json").unlink(missing_ok=True)
        shutil.rmtree(d, ignore_errors=True)

    def _lock_path(self, name: str) -> Path:
        if "/" in name or name.startswith("."):
            raise UsageError(f"'{name}' cannot name a lock")
        return self.root / "locks" / f"{name}.lock"

    @contextlib.contextmanager
    def locked(self, name: str, *, wait: float = 30.0) -> Iterator[None]:
        """Serialise up/down/provision of one lab across processes (not reentrant).

        The lock file exists only while a command holds or waits for it: the holder unlinks it before it lets
        go. A waiter that then gets the lock holds it on a file no longer at that path, sees so (the path is
        gone or is another inode) and tries again on the path's current file — so two commands never both
        think they hold the lock."""
        path = self._lock_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait
        while True:
            fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        if time.monotonic() > deadline:
                            raise ProviderError(f"lab '{name}' is busy: another testbed command holds its "
                                                f"lock ({path})") from None
                        time.sleep(0.05)
                held = os.fstat(fd)
                try:
                    now = os.stat(path)
                    current = (now.st_dev, now.st_ino) == (held.st_dev, held.st_ino)
                except FileNotFoundError:
                    current = False
            except BaseException:
                os.close(fd)
                raise
            if current:
                break
            os.close(fd)            # unlinked by the command that held it: lock the path's new file
        try:
            yield
        finally:
            try:
                os.unlink(path)     # while still holding it (see above)
            except FileNotFoundError:
                pass
            os.close(fd)
