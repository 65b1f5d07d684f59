"""An sshd of a test's own, on 127.0.0.1 only: a stand-in for "another machine" reached as root over SSH.

Its own host key, its own client key (the only authorized one), its own sshd_config (nothing of this
machine's /etc/ssh is read: `-f` names ours) and a known_hosts that pins its host key, so the client side
needs nothing of this machine's SSH configuration either. `close()` ends the sshd by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def why_no_sshd() -> str | None:
    if os.geteuid() != 0:
        return "needs root (an sshd that logs in as root)"
    for tool in ("ssh", "ssh-keygen"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/usr/sbin/sshd").exists():
        return "/usr/sbin/sshd is not installed (openssh-server)"
    return None


class TestSshd:
    """sshd -D -e on 127.0.0.1:port with everything under `root` (a directory of the test's)."""

    __test__ = False

    def __init__(self, root: Path, start_timeout: float = 10.0):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        self.host_key = root / "host_ed25519"
        self.client_key = root / "client_ed25519"
        self.known_hosts = root / "known_hosts"
        self.config = root / "sshd_config"
        self.log = root / "sshd.log"
        for key in (self.host_key, self.client_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "wt-test", "-f", str(key)],
                           check=True, capture_output=True)
        (root / "authorized_keys").write_text(Path(f"{self.client_key}.pub").read_text())
        self.port = free_port()
        host_pub = Path(f"{self.host_key}.pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        (root / "empty").mkdir(exist_ok=True)
        self.config.write_text("\n".join([
            f"ListenAddress 127.0.0.1:{self.port}",
            f"HostKey {self.host_key}",
            f"AuthorizedKeysFile {root / 'authorized_keys'}",
            f"PidFile {root / 'sshd.pid'}",
            "PermitRootLogin prohibit-password",
            "PubkeyAuthentication yes",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            "StrictModes no",
            "AllowTcpForwarding no",
            "X11Forwarding no",
            "PermitTunnel no",
            "MaxStartups 100:30:200",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "LogLevel ERROR", ""]))
        # sshd refuses to start without its privilege-separation directory (normally made by the service unit)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(self.config)],
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"))
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self.proc.returncode}: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(8).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.1)
        self.close()
        raise RuntimeError(f"sshd did not answer on 127.0.0.1:{self.port} within {start_timeout} s")

    def uri(self) -> str:
        return (f"qemu+ssh://root@127.0.0.1:{self.port}/system?keyfile={self.client_key}"
                f"&known_hosts={self.known_hosts}")

    def ssh_argv(self) -> list[str]:
        return ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-i", str(self.client_key),
                "-p", str(self.port), "root@127.0.0.1"]

    def sessions(self) -> list[int]:
        """PIDs of the per-connection sshd processes this sshd forked (still running)."""
        try:
            return [int(x) for t in Path(f"/proc/{self.proc.pid}/task").iterdir()
                    for x in (t / "children").read_text().split()]
        except OSError:
            return []

    def close(self) -> None:
        if self.proc.poll() is None:
            sessions = self.sessions()
            os.kill(self.proc.pid, signal.SIGTERM)    # the listener; its sessions outlive it, so end them too
            for pid in sessions:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
