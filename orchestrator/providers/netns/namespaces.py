"""Low-level network-namespace helpers: enter a namespace in-process, list namespaces, find their processes.

`entered(name)` switches the calling thread into a namespace (setns) and back, so sysctls can be written and
child processes started inside it without spawning `ip netns exec` for each; everything else in the
orchestrator goes through orchestrator.localrun.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import socket
import threading
from collections.abc import Iterable, Iterator

from orchestrator.localrun import NETNS_RUN_DIR

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
_lock = threading.Lock()


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextlib.contextmanager
def entered(name: str) -> Iterator[None]:
    """Run the body with this thread inside network namespace `name`; always switch back."""
    with _lock:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            target = os.open(os.path.join(NETNS_RUN_DIR, name), os.O_RDONLY)
            try:
                _setns(target)
            finally:
                os.close(target)
            try:
                yield
            finally:
                _setns(home)
        finally:
            os.close(home)


def connect_from(name: str, address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to address:port opened inside namespace `name` (the socket keeps that namespace after
    this thread leaves it): how the orchestrator's control traffic stands on the admin LAN."""
    with entered(name):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


def write_sysctls(name: str, values: dict[str, str]) -> None:
    """Write /proc/sys/net/... keys (dotted or slashed, relative to net.) inside namespace `name`."""
    with entered(name):
        for key, value in values.items():
            rel = key.removeprefix("net.").replace(".", "/")
            with open(f"/proc/sys/net/{rel}", "w") as fh:
                fh.write(value)


def read_sysctl(name: str, key: str) -> str:
    with entered(name):
        rel = key.removeprefix("net.").replace(".", "/")
        with open(f"/proc/sys/net/{rel}") as fh:
            return fh.read().strip()


def list_netns() -> set[str]:
    try:
        return set(os.listdir(NETNS_RUN_DIR))
    except FileNotFoundError:
        return set()


def netns_inode(name: str) -> int | None:
    try:
        return os.stat(os.path.join(NETNS_RUN_DIR, name)).st_ino
    except OSError:
        return None


PROC_NET_INIT_INO = 0xEFFFFFF9  # the kernel's fixed inode number of the initial network namespace


def root_netns_inode() -> int:
    """The machine's root network namespace: PID 1's, else kthreadd's (kernel threads live there), else the
    kernel's constant (PID 1 may be unreadable even for root in a sandbox)."""
    for pid in (1, 2):
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            continue
    return PROC_NET_INIT_INO


def in_root_netns() -> bool:
    return os.stat("/proc/self/ns/net").st_ino == root_netns_inode()


def pids_in_netns(names: Iterable[str]) -> dict[int, str]:
    """PIDs of every process whose network namespace is one of `names` (one pass over /proc)."""
    inodes = {ino: n for n in names if (ino := netns_inode(n)) is not None}
    if not inodes:
        return {}
    found: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            link = os.readlink(f"/proc/{entry}/ns/net")
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ESRCH, errno.EACCES):
                continue
            raise
        ino = int(link[link.index("[") + 1:-1])
        if ino in inodes:
            found[int(entry)] = inodes[ino]
    return found
