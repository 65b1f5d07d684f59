"""Where labs remember themselves: one directory per lab under the state root, holding a snapshot of the
resolved lab and a journal of every resource a provider made (written *before* each step), per-host state
directories, and the lab's keys. `down NAME` needs nothing else, even after the orchestrator was killed.

The state root is /var/lib/worm-testbed unless TESTBED_STATE_DIR says otherwise (tests use a private one).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import LabNotFoundError, ProviderError
from .files import atomic_write_json, read_json
from .topology import Lab

DEFAULT_ROOT = "/var/lib/worm-testbed"


def state_root() -> Path:
    return Path(os.environ.get("TESTBED_STATE_DIR", DEFAULT_ROOT))


@dataclass
class LabRecord:
    name: str
    provider: str
    state: str                      # creating | up | failed | destroying
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
        return self.labs_dir / name

    def host_dir(self, lab: str, host: str) -> Path:
        return self.lab_dir(lab) / "hosts" / host

    def names(self) -> list[str]:
        if not self.labs_dir.is_dir():
            return []
        return sorted(p.name for p in self.labs_dir.iterdir() if (p / "lab.json").is_file())

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
        shutil.rmtree(self.lab_dir(name), ignore_errors=True)

    @contextlib.contextmanager
    def locked(self, name: str, *, wait: float = 30.0) -> Iterator[None]:
        """Serialise up/down/provision of one lab across processes."""
        lock_dir = self.root / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_dir / f"{name}.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            deadline = time.monotonic() + wait
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ProviderError(f"lab '{name}' is busy: another testbed command holds its lock "
                                            f"({lock_dir / (name + '.lock')})") from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)
