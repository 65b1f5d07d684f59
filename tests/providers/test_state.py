"""The state store without root: labs killed while writing their first record, lock files, lab names."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from orchestrator.errors import ProviderError, UsageError
from orchestrator.lab import lifecycle
from orchestrator.providers.state import LabRecord, StateStore

REPO = Path(__file__).resolve().parents[2]


def uniq() -> str:
    return f"t{secrets.token_hex(3)}"


@pytest.fixture
def st(tmp_path, monkeypatch) -> StateStore:
    monkeypatch.setenv("TESTBED_STATE_DIR", str(tmp_path / "state"))
    return StateStore(tmp_path / "state")


def unborn(st: StateStore, name: str, body: str = '{"name": "x", "journal": [{"kind": "netns"') -> Path:
    """What a SIGKILL during the first journal write leaves: the lab's directory with only the temporary
    file of lab.json (here cut short, as a kill half-way through the write leaves it)."""
    d = st.lab_dir(name)
    d.mkdir(parents=True)
    tmp = d / ".lab.json.k3j9x2.tmp"
    tmp.write_text(body)
    return tmp


def cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60, env={**os.environ, **env})


def test_down_removes_a_lab_killed_while_writing_its_first_record(st):
    name = uniq()
    unborn(st, name)
    (st.root / "locks").mkdir(parents=True)
    (st.root / "locks" / f"{name}.lock").touch()          # the kill left its lock file too
    assert st.names() == [] and st.unborn() == [name]
    removed = lifecycle.down(name, store=st)
    assert [(r.kind, r.name, r.present) for r in removed] == [("state-dir", str(st.lab_dir(name)), True)]
    assert "killed while writing its first record" in removed[0].detail
    assert not st.lab_dir(name).exists() and not (st.root / "locks" / f"{name}.lock").exists()
    assert lifecycle.down(name, store=st) is None                 # idempotent: nothing is left


def test_the_cli_says_what_it_removed(st, tmp_path):
    name = uniq()
    unborn(st, name)
    res = cli("down", name, env={"TESTBED_STATE_DIR": str(st.root)})
    assert res.returncode == 0, res.stderr
    assert f"lab {name} removed (1 state-dir" in res.stdout
    assert "no lab named" not in res.stdout and not st.lab_dir(name).exists()


def test_down_all_removes_unborn_labs_and_stale_lock_files(st):
    a, b, c = sorted(uniq() for _ in range(3))
    unborn(st, a)
    unborn(st, b, body="")                                  # killed before a byte was written
    st.lab_dir(b).joinpath(".lab.json.second.tmp").write_text("{}")
    (st.root / "locks").mkdir(parents=True)
    (st.root / "locks" / f"{c}.lock").touch()               # a command killed while holding c's lock
    done = lifecycle.down_all(store=st)
    assert sorted(done) == [a, b] and all(r[0].kind == "state-dir" for r in done.values())
    assert list(st.labs_dir.iterdir()) == [] and list((st.root / "locks").iterdir()) == []


def test_a_directory_with_other_files_and_no_record_is_not_removed(st):
    name = uniq()
    unborn(st, name)
    (st.lab_dir(name) / "notes.txt").write_text("mine")
    with pytest.raises(ProviderError) as exc:
        lifecycle.down(name, store=st)
    assert f"{st.lab_dir(name)} holds no lab record (lab.json) but notes.txt" in exc.value.message
    assert (st.lab_dir(name) / "notes.txt").read_text() == "mine"


KILLED_WRITER = """
import os, sys, time
from orchestrator.providers.state import LabRecord, StateStore
st = StateStore(sys.argv[1])
real = os.replace
def stall(src, dst):                # the record is written and fsynced; the rename never comes
    print("written", flush=True)
    time.sleep(60)
os.replace = stall
with st.locked(sys.argv[2]):        # as a provider's create() holds it
    st.journal(LabRecord(sys.argv[2], "netns", "creating", {}), "netns", ["wt.x.switch"])
"""


def test_a_real_sigkill_during_the_first_record_write(st):
    name = uniq()
    p = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(st.root), name], cwd=REPO,
                         stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "written\n"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    held = [f.name for f in st.lab_dir(name).iterdir()]
    assert len(held) == 1 and held[0].startswith(".lab.json.") and held[0].endswith(".tmp")
    assert (st.root / "locks" / f"{name}.lock").exists()
    assert st.load(name) is None and st.unborn() == [name]
    assert lifecycle.down(name, store=st)[0].kind == "state-dir"
    assert not st.lab_dir(name).exists() and not (st.root / "locks" / f"{name}.lock").exists()


def test_removing_a_lab_leaves_its_record_for_last(st, monkeypatch):
    name = uniq()
    st.save(LabRecord(name, "netns", "destroying", {}))
    (st.host_dir(name, "h1") / "procs").mkdir(parents=True)
    order = []
    real_unlink = Path.unlink
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: (order.append(self.name),
                                                                          real_unlink(self, missing_ok))[1])
    st.remove(name)
    assert order[-1] == "lab.json" and not st.lab_dir(name).exists()


def test_lock_files_go_when_released(st):
    name = uniq()
    path = st.root / "locks" / f"{name}.lock"
    with st.locked(name):
        assert path.exists()
    assert not path.exists()
    with pytest.raises(RuntimeError), st.locked(name):
        raise RuntimeError("a failing step")
    assert not path.exists()


def test_a_waiter_on_an_unlinked_lock_file_locks_the_new_one(st):
    """B opens the lock file while A holds it; A unlinks it and lets go; B then holds a lock on a file no
    longer at the path — it must notice, and lock the path's new file, so that C is kept out."""
    name = uniq()
    path = st.root / "locks" / f"{name}.lock"
    inside, release, seen = threading.Event(), threading.Event(), {}

    def waiter():
        with st.locked(name, wait=10):
            seen["exists"] = path.exists()
            try:
                with st.locked(name, wait=0):
                    seen["c"] = "also got it"
            except ProviderError as exc:
                seen["c"] = exc.message
            inside.set()
            release.wait(10)

    with st.locked(name):
        t = threading.Thread(target=waiter)
        t.start()
        time.sleep(0.3)                     # B has opened the old file and is waiting on it
        assert not inside.is_set()
    assert inside.wait(10)
    assert seen["exists"]                   # B holds the lock on the file at the path, not on the orphan
    assert seen["c"].startswith(f"lab '{name}' is busy: another testbed command holds its lock")
    release.set()
    t.join(10)
    assert not path.exists()


def test_the_lock_excludes_under_churn(st):
    """Eight threads take and release one lab's lock 15 times each (the file unlinked at every release):
    never two inside at once."""
    name = uniq()
    state = {"in": 0, "max": 0, "n": 0}

    def worker():
        for _ in range(15):
            with st.locked(name, wait=20):
                state["in"] += 1
                state["max"] = max(state["max"], state["in"])
                time.sleep(0.001)
                state["n"] += 1
                state["in"] -= 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert (state["max"], state["n"]) == (1, 120)
    assert not (st.root / "locks" / f"{name}.lock").exists()


@pytest.mark.parametrize("bad", ["../..", "a/b", "..", "UPPER", ""])
def test_names_that_are_not_lab_names_never_become_paths(st, bad):
    (st.root / "labs").mkdir(parents=True)
    with pytest.raises(UsageError) as exc:
        lifecycle.down(bad, store=st)
    assert exc.value.exit_code == 2 and f"'{bad}' is not a lab name" in exc.value.message
    assert st.root.exists() and (st.root / "labs").exists()


def test_down_of_a_path_is_exit_2_on_the_command_line(st):
    res = cli("down", "../..", env={"TESTBED_STATE_DIR": str(st.root)})
    assert res.returncode == 2 and "error: '../..' is not a lab name" in res.stderr
    assert "Traceback" not in res.stderr
