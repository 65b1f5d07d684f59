"""SSH over the admin LAN and Ansible provisioning, on real namespace labs (root)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from orchestrator.errors import AccessError, ProvisionError
from orchestrator.lab import lifecycle
from orchestrator.lab.provision import provision_lab
from orchestrator.lab.ssh import Access
from orchestrator.providers.keys import _keypair, lab_keys
from orchestrator.providers.netns.provider import NetnsProvider

LABS = Path(__file__).resolve().parents[2] / "labs"
REPO = LABS.parent
pytestmark = pytest.mark.root



@pytest.fixture
def paper(store):
    name = f"p{secrets.token_hex(3)}"
    lab = lifecycle.up(LABS / "paper-testbed.yaml", name=name, store=store)
    NetnsProvider(store).wait_booted(name)          # every host's sshd runs
    return name, lab


@pytest.fixture
def speed(store):
    name = f"s{secrets.token_hex(3)}"
    lab = lifecycle.up(LABS / "stopping-speed.yaml", name=name, store=store)
    NetnsProvider(store).wait_booted(name)
    return name, lab


def test_commands_on_every_blade_and_files_both_ways(paper, store, tmp_path):
    name, lab = paper
    with Access(name, store) as acc:
        acc.wait_reachable(timeout=20)
        blades = [h.name for h in lab.by_role("blade")]
        res = acc.run_many(blades, "hostname; ip -4 -o addr show dev admin0 | awk '{print $4}'")
        assert {h: r.exit_code for h, r in res.items()} == {b: 0 for b in blades}
        for b in blades:
            got_name, got_addr = res[b].stdout.split()
            assert got_name == b and got_addr == lab.host(b).iface("admin").address
        # sshd listens on the admin address only
        r = acc.run("blade4", ["sh", "-c", "ss -Htln | awk '{print $4}'"])
        assert r.stdout.split() == [f"{lab.host('blade4').ip('admin')}:22"]
        # exit codes, stdin, streamed output, timeouts
        chunks = []
        r = acc.run("blade2", "cat; echo err >&2; exit 4", input="piped", on_output=lambda k, d: chunks.append(k))
        assert (r.exit_code, r.stdout, r.stderr) == (4, "piped", "err\n") and set(chunks) == {"stdout", "stderr"}
        r = acc.run("blade2", "sleep 10", timeout=0.3)
        assert r.exit_code == 124 and r.timed_out
        # a file there and back
        src = tmp_path / "payload.bin"
        src.write_bytes(os.urandom(50_000))
        acc.put("blade9", src, "/tmp/wt-payload.bin", mode=0o600)
        assert acc.run("blade9", "stat -c %a /tmp/wt-payload.bin").stdout.strip() == "600"
        acc.get("blade9", "/tmp/wt-payload.bin", tmp_path / "back.bin")
        assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()
        acc.run("blade9", "rm -f /tmp/wt-payload.bin", check=True)


def test_the_root_namespace_has_no_route_into_the_lab(paper):
    name, lab = paper
    r = subprocess.run(["ip", "-j", "route", "get", lab.host("blade1").ip("admin")], capture_output=True, text=True)
    # whatever the machine's default route says, nothing in the root namespace leads to the lab's subnets
    assert "wt." not in r.stdout and "admin0" not in r.stdout


def test_stopped_sshd_gives_a_clear_error(paper, store):
    name, lab = paper
    NetnsProvider(store).stop(name, "blade5", "sshd")
    with Access(name, store) as acc:
        with pytest.raises(AccessError, match=r"blade5 \(198\.18\.1\.\d+\) refused the SSH connection: is its sshd running\?"):
            acc.run("blade5", "true")
        res = acc.run_many(["blade5", "blade6"], "true")
        assert res["blade6"].exit_code == 0 and res["blade5"].exit_code == 255
        assert "refused the SSH connection" in res["blade5"].stderr


def test_replaced_host_key_is_refused(paper, store):
    name, lab = paper
    prov = NetnsProvider(store)
    keys = lab_keys(store, name)
    with Access(name, store) as acc:
        acc.run("blade7", "true", check=True)
    # the host is "rebuilt" with a new key the lab never pinned
    private, public = _keypair("impostor")
    keys.host_key("blade7").write_text(private)
    prov.stop(name, "blade7", "sshd")
    d = store.host_dir(name, "blade7") / "etc" / "sshd_config"
    prov.spawn(name, "blade7", "sshd", ["/usr/sbin/sshd", "-D", "-e", "-f", str(d)], service=True)
    time.sleep(0.3)
    with Access(name, store) as acc:
        with pytest.raises(AccessError, match="blade7 .* presented a different host key than the lab generated"):
            acc.run("blade7", "true")
    # and an address with no pinned key at all is refused too, never added
    kh = keys.known_hosts.read_text().splitlines()
    keys.known_hosts.write_text("\n".join(line for line in kh if not line.startswith(lab.host("blade8").ip("admin") + " "))
                                + "\n")
    with Access(name, store) as acc:
        with pytest.raises(AccessError, match="blade8 .* has no pinned host key"):
            acc.run("blade8", "true")
    assert lab.host("blade8").ip("admin") not in keys.known_hosts.read_text()


def test_exec_via_ssh_passes_the_exit_code_through(paper):
    name, _ = paper
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "exec", name, "blade1", "--via", "ssh", "--",
                        "sh", "-c", "echo out; echo err >&2; exit 9"], capture_output=True, text=True, cwd=REPO)
    assert (r.returncode, r.stdout, r.stderr) == (9, "out\n", "err\n")


def _connect_result(acc, host, addr, port=80):
    code = ("import socket,sys,time\ns=socket.socket(); s.settimeout(4); t=time.monotonic()\n"
            "try:\n s.connect((sys.argv[1], int(sys.argv[2]))); r='connected'\n"
            "except ConnectionRefusedError: r='refused'\nexcept OSError as e: r=type(e).__name__\n"
            "print(r, round(time.monotonic()-t, 3))")
    out = acc.run(host, ["python3", "-c", code, addr, str(port)], check=True).stdout.split()
    return out[0], float(out[1])


def test_provisioning_is_idempotent_and_the_gateway_answers_empty_addresses(speed, store):
    name, lab = speed
    with Access(name, store) as acc:
        acc.wait_reachable(timeout=20)
        before = _connect_result(acc, "blade", "198.18.9.77")
    assert before[0] != "refused"         # nobody answers an empty address before the gateway is configured

    roles = ["common", "sniffer", "gateway"]
    first = provision_lab(name, roles=roles, store=store)
    assert all(n >= 1 for h, n in first.changed.items()), first.changed
    assert set(first.role_seconds) == {"common", "sniffer", "gateway"}
    again = provision_lab(name, roles=roles, store=store)
    assert again.total_changed == 0, again.changed

    with Access(name, store) as acc:
        kind, seconds = _connect_result(acc, "blade", "198.18.9.77")
        assert kind == "refused" and seconds < 0.5           # an RST from the gateway, at once
        assert _connect_result(acc, "blade", lab.host("target2").ip("experimental.targets"))[0] == "refused"
        host_json = acc.run("target1", f"cat {store.host_dir(name, 'target1')}/opt/etc/host.json", check=True).stdout
        assert '"role": "target"' in host_json and '"lab": "' + name + '"' in host_json
        assert acc.run("gateway", "nft list table inet wt_gateway", check=True).stdout.count("reject with tcp reset") == 1


def test_a_failing_task_names_host_task_and_message(speed, store):
    name, _ = speed
    NetnsProvider(store).exec(name, "sniffer", ["ip", "addr", "add", "198.18.8.200/24", "dev", "exp0"]).check()
    with pytest.raises(ProvisionError) as exc:
        provision_lab(name, roles=["sniffer"], store=store)
    assert ("sniffer: task 'A capture directory, tcpdump, and passive ports with no address' failed: "
            "interface exp0 must carry no address but has 198.18.8.200") in exc.value.message


def test_an_unreachable_host_is_named(speed, store):
    name, _ = speed
    NetnsProvider(store).stop(name, "target2", "sshd")
    with pytest.raises(ProvisionError) as exc:
        provision_lab(name, roles=["common"], store=store)
    assert "target2: unreachable over SSH" in exc.value.message
    assert "target1" not in exc.value.message


@pytest.mark.slow
def test_the_paper_testbed_provisions_fully_and_a_second_run_changes_nothing(paper, store):
    name, lab = paper
    with Access(name, store) as acc:
        acc.wait_reachable(timeout=30)
    first = provision_lab(name, store=store)
    assert set(first.role_seconds) == {"common", "testworm", "throttle", "sniffer", "gateway", "injector"}
    assert all(first.changed[h.name] >= 1 for h in lab.hosts)
    again = provision_lab(name, store=store)
    assert again.total_changed == 0, {h: n for h, n in again.changed.items() if n}
    with Access(name, store) as acc:
        prefix = f"{store.host_dir(name, 'blade3')}/opt"
        # the worm and the throttle run from the host's prefix with the host's own python3
        r = acc.run("blade3", f"PYTHONPATH={prefix}/lib python3 -m throttle predict --rate 20 --json")
        assert r.exit_code == 0 and '"stop_s"' in r.stdout
        r = acc.run("blade3", f"PYTHONPATH={prefix}/lib python3 -c 'import testworm, netfilterqueue, hostagent'")
        assert r.exit_code == 0, r.stderr
        assert acc.run("blade3", f"stat -c %a {prefix}/etc/worm.key").stdout.strip() == "600"
        assert acc.run("injector", f"test -s {store.host_dir(name, 'injector')}/opt/etc/worm.key").ok
        assert not acc.run("sniffer", f"test -e {store.host_dir(name, 'sniffer')}/opt/etc/worm.key").ok


def test_up_with_provision_from_the_command_line(store):
    name = f"u{secrets.token_hex(3)}"
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "up", str(LABS / "stopping-speed.yaml"), "--name",
                        name, "--provision"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"lab {name} is up: 7 hosts on 5 segments" in r.stdout
    assert f"provisioned lab {name} in " in r.stdout and "per role: common" in r.stdout
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "provision", name, "--roles", "common,gateway",
                        "--json"], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["roles"] == ["common", "gateway"] and rep["lab"] == name
    assert sum(rep["changed"].values()) == 0            # `up --provision` already applied them
