"""Real namespace labs (root): build, audit, use and remove them, also after crashes and next to other labs."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.errors import LabExistsError, NotRootError, ProviderError
from orchestrator.lab import lifecycle
from orchestrator.localrun import pid_start_time
from orchestrator.providers.naming import ns_name, switch_name
from orchestrator.providers.netns import namespaces
from orchestrator.providers.netns.processes import tcp_listening
from orchestrator.providers.netns.provider import NetnsProvider

LABS = Path(__file__).resolve().parents[3] / "labs"
REPO = LABS.parent
pytestmark = pytest.mark.root


def uniq() -> str:
    return f"t{secrets.token_hex(3)}"


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {line.split(":")[1].strip() for line in out.splitlines()}


def lab_namespaces(name: str) -> set[str]:
    return {n for n in namespaces.list_netns() if n.startswith(f"wt.{name}.")}



def cli(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=timeout, env={**os.environ, **(env or {})})


def test_paper_testbed_up_check_status_exec_down(store):
    before = root_links()
    name = uniq()
    lifecycle.up(LABS / "paper-testbed.yaml", name=name, store=store)
    assert len(lab_namespaces(name)) == 22                       # 21 hosts + the lab's switch
    assert root_links() == before                                # nothing of the lab in the root namespace

    rep = lifecycle.check(name, store=store)
    assert rep.ok, [(f.host, f.check, f.detail) for f in rep.problems]

    st = lifecycle.status(name, store=store)
    assert st.state == "up" and len(st.hosts) == 21 and all(h.state == "up" for h in st.hosts)
    blade7 = next(h for h in st.hosts if h.name == "blade7")
    assert blade7.addresses == {"mgmt0": "198.18.0.8/24", "admin0": "198.18.1.12/24", "exp0": "198.18.8.10/22"}
    assert next(h for h in st.hosts if h.name == "sniffer").addresses["exp0"] == ""

    prov = NetnsProvider(store)
    prov.wait_booted(name)                                       # every host's sshd is running
    res = prov.exec(name, "blade7", ["sh", "-c", "hostname; ip -4 -o addr show exp0; exit 3"])
    assert res.exit_code == 3
    assert res.stdout.splitlines()[0] == "blade7"
    assert "198.18.8.10/22" in res.stdout

    # a long-running process with its own /run, recorded and listed
    pid = prov.spawn(name, "expt-server", "sleeper",
                     ["sh", "-c", "echo private > /run/marker; sleep 300"])
    deadline = time.monotonic() + 5
    while not (store.host_dir(name, "expt-server") / "run" / "marker").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (store.host_dir(name, "expt-server") / "run" / "marker").read_text() == "private\n"
    assert not Path("/run/marker").exists()
    procs = {p["name"]: p for p in prov.processes(name, "expt-server")}
    assert set(procs) == {"sleeper", "sshd"}                      # every host boots its sshd
    assert (procs["sleeper"]["pid"], procs["sleeper"]["alive"], procs["sshd"]["alive"]) == (pid, True, True)

    removed = lifecycle.down(name, store=store)
    kinds = sorted({r.kind for r in removed} - {"sysctl"})    # kernel limits put back, if it was the last lab
    assert kinds == ["netns", "process"]
    assert not lab_namespaces(name)
    assert pid_start_time(pid) is None                           # the lab's process is gone
    assert not store.lab_dir(name).exists()
    assert root_links() == before
    assert lifecycle.down(name, store=store) is None                  # idempotent: a second down finds nothing


def test_sigkill_during_up_then_down_cleans_up(store):
    name = uniq()
    p = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "up", str(LABS / "paper-testbed.yaml"),
                          "--name", name], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                         env={**os.environ, "TESTBED_FAULT_PAUSE": "after-veth"})
    try:
        line = p.stdout.readline()
        assert line.strip() == "fault-pause:after-veth", p.stderr.read() if p.poll() is not None else line
        assert len(lab_namespaces(name)) == 22
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
    rec = store.load(name)
    assert rec is not None and rec.state == "creating"

    again = cli("up", str(LABS / "paper-testbed.yaml"), "--name", name)
    assert again.returncode == 1
    assert f"lab '{name}' was left creating by an interrupted command; run `testbed down {name}` first" in again.stderr

    res = cli("down", name)
    assert res.returncode == 0, res.stderr
    assert f"lab {name} removed (22 netns" in res.stdout
    assert not lab_namespaces(name) and store.load(name) is None


def test_failure_half_way_rolls_back(store, monkeypatch):
    name = uniq()
    monkeypatch.setenv("TESTBED_FAULT_FAIL", "after-config")
    with pytest.raises(ProviderError, match="injected failure at step 'after-config'"):
        lifecycle.up(LABS / "stopping-speed.yaml", name=name, store=store)
    assert not lab_namespaces(name)
    assert store.load(name) is None


def test_a_namespace_in_the_way_stops_up_before_anything_is_made(store):
    name = uniq()
    squatter = ns_name(name, "blade")
    subprocess.run(["ip", "netns", "add", squatter], check=True)
    try:
        with pytest.raises(ProviderError, match=f"network namespace {squatter} already exists"):
            lifecycle.up(LABS / "stopping-speed.yaml", name=name, store=store)
        assert lab_namespaces(name) == {squatter}
        assert store.load(name) is None
    finally:
        subprocess.run(["ip", "netns", "del", squatter])


def test_up_twice_is_refused(store):
    name = uniq()
    lifecycle.up(LABS / "stopping-speed.yaml", name=name, store=store)
    with pytest.raises(LabExistsError, match=f"lab '{name}' is already up"):
        lifecycle.up(LABS / "stopping-speed.yaml", name=name, store=store)


def test_two_labs_at_once_do_not_touch_each_other(store):
    a, b = uniq(), uniq()
    lifecycle.up(LABS / "stopping-speed.yaml", name=a, store=store)
    lifecycle.up(LABS / "stopping-speed.yaml", name=b, store=store)    # same subnets, separate namespaces
    assert lifecycle.check(a, store=store).ok and lifecycle.check(b, store=store).ok
    lifecycle.down(a, store=store)
    assert not lab_namespaces(a)
    assert len(lab_namespaces(b)) == 8
    st = lifecycle.status(b, store=store)
    assert st.state == "up" and all(h.state == "up" for h in st.hosts)
    assert lifecycle.check(b, store=store).ok


def test_down_all_removes_only_what_the_tool_made(store):
    name = uniq()
    lifecycle.up(LABS / "stopping-speed.yaml", name=name, store=store)
    foreign = f"wtforeign{secrets.token_hex(3)}"
    ghost = ns_name(name, "ghost")                  # looks like ours, but no lab recorded it
    for ns in (foreign, ghost):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", foreign, "link", "add", "br-admin", "type", "bridge"], check=True)
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        res = cli("down", "--all")
        assert res.returncode == 0, res.stderr
        assert f"lab {name} removed" in res.stdout
        left_alone = next(line for line in res.stdout.splitlines() if line.startswith("left alone"))
        assert ghost in left_alone.split(": ", 1)[1].split(", ")
        assert lab_namespaces(name) == {ghost}
        assert foreign in namespaces.list_netns()
        assert "br-admin" in subprocess.run(["ip", "-n", foreign, "link"], capture_output=True, text=True).stdout
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
        for ns in (foreign, ghost):
            subprocess.run(["ip", "netns", "del", ns])


def _capture(prov, name, host, iface, pname):
    pcap = f"/tmp/wt-{name}-{pname}.pcap"      # hosts share this machine's /tmp
    prov.spawn(name, host, pname, ["tcpdump", "-i", iface, "-nn", "--immediate-mode", "-U", "-w", pcap, "udp port 5555"])
    log = prov.store.host_dir(name, host) / "log" / f"{pname}.log"
    deadline = time.monotonic() + 10
    while "listening on" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "listening on" in log.read_text()
    return Path(pcap)


def _count(path: Path) -> int:
    out = subprocess.run(["tcpdump", "-r", str(path), "-nn"], capture_output=True, text=True).stdout
    return len(out.splitlines())


SEND = ("import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
        "for i in range(int(sys.argv[2])): s.sendto(b'frame%d' % i, (sys.argv[1], 5555))\n")


def test_sniffer_sees_each_frame_exactly_once_and_others_see_only_their_own(store):
    name = uniq()
    lab = lifecycle.up(LABS / "paper-testbed.yaml", name=name, store=store)
    prov = NetnsProvider(store)
    sniffed = _capture(prov, name, "sniffer", "exp0", "snf")
    bystander = _capture(prov, name, "blade3", "exp0", "by")
    receiver = _capture(prov, name, "blade2", "exp0", "rx")
    prov.exec(name, "blade1", ["python3", "-c", SEND, lab.host("blade2").ip("experimental"), "25"]).check()
    time.sleep(0.3)
    prov.stop(name, "sniffer", "snf")
    prov.stop(name, "blade3", "by")
    prov.stop(name, "blade2", "rx")
    counts = [_count(receiver), _count(sniffed), _count(bystander)]
    for f in (receiver, sniffed, bystander):
        f.unlink()
    assert counts == [25, 25, 0]


def test_sniffer_has_one_passive_port_per_experimental_subnet(store):
    name = uniq()
    lab = lifecycle.up(LABS / "stopping-speed.yaml", name=name, store=store)
    prov = NetnsProvider(store)
    blades_side = _capture(prov, name, "sniffer", "exp0", "s0")
    targets_side = _capture(prov, name, "sniffer", "exp1", "s1")
    prov.exec(name, "blade", ["python3", "-c", SEND, lab.host("target2").ip("experimental.targets"), "10"]).check()
    time.sleep(0.3)
    prov.stop(name, "sniffer", "s0")
    prov.stop(name, "sniffer", "s1")
    counts = [_count(blades_side), _count(targets_side)]
    blades_side.unlink()
    targets_side.unlink()
    assert counts == [10, 10]     # blade -> gateway on the blades' segment; gateway -> target2 on the targets'


def test_not_root_says_so_with_the_fix(store, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NotRootError) as exc:
        lifecycle.up(LABS / "stopping-speed.yaml", name=uniq(), store=store)
    assert "the netns provider needs root" in exc.value.message
    assert exc.value.hint == "run as root, e.g. sudo testbed …"


def test_cli_errors_a_lab_not_here_and_a_lab_named_by_its_file(store, tmp_path):
    before = namespaces.list_netns()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nhosts:\n  admin-server: {role: admin-server, colour: red}\n")
    res = cli("up", str(bad))
    assert res.returncode == 2
    assert f"error: {bad}: 1 problem" in res.stderr
    assert "hosts.admin-server.colour (line 3): unknown key 'colour'" in res.stderr
    assert "Traceback" not in res.stderr
    assert namespaces.list_netns() == before
    res = cli("down", "no-such-lab")              # not found: 3, as for status, exec and check
    assert res.returncode == 3 and "no lab named 'no-such-lab' is here; nothing to remove" in res.stderr
    name = uniq()
    lifecycle.up(LABS / "stopping-speed.yaml", name=name, store=store)
    res = cli("exec", name, "target1", "--", "sh", "-c", "echo hi; exit 7")
    assert res.returncode == 7 and res.stdout == "hi\n"
    res = cli("exec", name, "nosuch", "--", "true")
    assert res.returncode == 3 and f"lab '{name}' has no host 'nosuch'; its hosts: admin-server, gateway" in res.stderr
    res = cli("status", name, "--json")
    assert res.returncode == 0 and '"name": "target2"' in res.stdout
    assert switch_name(name) in namespaces.list_netns()
    own = tmp_path / "own.yaml"                     # the lab named by its file, as containerlab's -t FILE
    own.write_text((LABS / "stopping-speed.yaml").read_text().replace("name: stopping-speed", f"name: {name}"))
    res = cli("exec", str(own), "target1", "--json", "--", "sh", "-c", "echo hi; exit 7")
    assert res.returncode == 7 and json.loads(res.stdout)["stdout"] == "hi\n"


def test_hosts_boot_after_up_and_ssh_waits_for_them(store):
    name = uniq()
    lifecycle.up(LABS / "paper-testbed.yaml", name=name, store=store)
    prov = NetnsProvider(store)
    assert prov.boot_state(name) in ("booting", "booted")
    # SSH right after `up` waits for the host's sshd instead of failing
    from orchestrator.lab.ssh import Access
    with Access(name, store) as acc:
        assert acc.run("blade16", "hostname", check=True).stdout == "blade16\n"
    prov.wait_booted(name)
    assert prov.boot_state(name) == "booted" and "booted 21 hosts in" in (store.lab_dir(name) / "boot.log").read_text()
    assert all(any(p["name"] == "sshd" and p["alive"] for p in prov.processes(name, h))
               for h in ("admin-server", "gateway", "sniffer", "blade1", "blade16"))
    # booted means listening: every sshd's own namespace has its admin address:22 in LISTEN
    lab = store.require(name).topology
    for h in (h for h in lab.hosts if h.ip("admin")):
        pid = next(p["pid"] for p in prov.processes(name, h.name) if p["name"] == "sshd")
        assert tcp_listening(pid, h.ip("admin"), 22), h.name
        assert not tcp_listening(pid, h.ip("admin"), 2222)
    st = lifecycle.status(name, store=store)
    assert not any("booting" in n for n in st.notes)


def test_tcp_listening_reads_the_callers_namespace_table():
    import socket
    with socket.socket() as srv, socket.socket() as idle:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        idle.bind(("127.0.0.1", 0))            # bound, not listening
        assert tcp_listening(os.getpid(), "127.0.0.1", srv.getsockname()[1])
        assert not tcp_listening(os.getpid(), "127.0.0.1", idle.getsockname()[1])
        assert not tcp_listening(os.getpid(), "127.0.0.2", srv.getsockname()[1])
    assert not tcp_listening(2**22 + 12345, "127.0.0.1", 22)    # no such process


def test_services_that_died_are_revived_and_power_on_restarts_them(store):
    """A namespace lab's sshds die with the session that started them; a run on the lab later starts them again."""
    name = uniq()
    lifecycle.up(LABS / "stopping-speed.yaml", name=name, store=store)
    prov = NetnsProvider(store)
    prov.wait_booted(name)
    from orchestrator.errors import AccessError
    from orchestrator.lab.ssh import Access

    def kill_sshd(host: str) -> None:
        sshd = next(p for p in prov.processes(name, host) if p["name"] == "sshd")
        os.kill(sshd["pid"], signal.SIGKILL)           # our lab's own sshd, by its recorded PID
        deadline = time.monotonic() + 5
        while next(p for p in prov.processes(name, host) if p["name"] == "sshd")["alive"]:
            assert time.monotonic() < deadline
            time.sleep(0.02)

    try:
        for host in ("blade", "gateway"):
            kill_sshd(host)
        with Access(name, store) as acc, pytest.raises(AccessError, match="blade .* refused the SSH connection") as ei:
            acc.connect("blade", timeout=2)
        assert f"testbed power {name} blade on" in str(ei.value)
        assert sorted(prov.revive(name)) == ["blade/sshd", "gateway/sshd"]
        assert prov.revive(name) == []                  # nothing else had died
        with Access(name, store) as acc:
            assert acc.run("blade", "hostname", check=True).stdout == "blade\n"
        kill_sshd("blade")
        assert prov.power(name, "blade", "on") == "blade: on -> on"
        with Access(name, store) as acc:
            assert acc.run("blade", "hostname", check=True).stdout == "blade\n"
    finally:
        lifecycle.down(name, store=store)


def test_a_failed_boot_is_reported(store, monkeypatch):
    name = uniq()
    lifecycle.up(LABS / "stopping-speed.yaml", name=name, store=store)
    prov = NetnsProvider(store)
    prov.wait_booted(name)
    (store.lab_dir(name) / "booted").unlink()
    (store.lab_dir(name) / "boot-failed").write_text("OSError: no space left on device\n")
    with pytest.raises(ProviderError, match=f"lab '{name}' did not boot: OSError: no space left on device"):
        prov.wait_booted(name)
    assert any("failed: OSError: no space left on device" in n for n in lifecycle.status(name, store=store).notes)
