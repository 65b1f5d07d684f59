"""`testbed check` on a real lab that someone broke (root): every break exits non-zero and names the host and
the path — a flushed filter, a rule deleted, the table deleted, the gateway's forward chain set to accept,
forwarding turned on, an address from another LAN. One paper-testbed lab for the module; each test puts back
what it broke, and the lab is checked clean first and last."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from orchestrator.lab import lifecycle
from orchestrator.labfile import isolation
from orchestrator.labfile.load import load_lab
from orchestrator.providers.naming import ns_name
from orchestrator.providers.netns import nftables
from orchestrator.providers.netns.provider import NetnsProvider
from orchestrator.providers.state import StateStore

LABS = Path(__file__).resolve().parents[2] / "labs"
REPO = LABS.parent
pytestmark = pytest.mark.root


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    state = tmp_path_factory.mktemp("breaks") / "state"
    mp = pytest.MonkeyPatch()
    mp.setenv("TESTBED_STATE_DIR", str(state))
    store = StateStore(state)
    name = f"t{secrets.token_hex(3)}"
    try:
        lab = lifecycle.up(LABS / "paper-testbed.yaml", name=name, store=store)
        prov = NetnsProvider(store)
        prov.wait_booted(name)
        yield SimpleNamespace(store=store, name=name, lab=lab, prov=prov)
    finally:
        lifecycle.down_all(store=store)
        mp.undo()


def check(env) -> tuple[int, list[str]]:
    """`testbed check` as a user runs it: its exit code and the lines naming problems."""
    r = subprocess.run([sys.executable, "-m", "orchestrator.cli", "check", env.name], capture_output=True, text=True,
                       cwd=REPO, timeout=120, env=dict(os.environ))
    return r.returncode, sorted(line for line in r.stderr.splitlines() if line.startswith(("LEAK:", "BROKEN:")))


def sh(env, host: str, cmd: str) -> None:
    r = env.prov.exec(env.name, host, ["sh", "-c", cmd])
    assert r.ok, (host, cmd, r.stderr)


def reload_filter(env, host: str) -> None:
    env.prov.exec(env.name, host, ["nft", "delete", "table", "inet", isolation.TABLE])
    nftables.load(ns_name(env.name, host), isolation.ruleset(env.lab.host(host)))


@contextmanager
def broken(env, host: str, cmd: str, repair):
    sh(env, host, cmd)
    try:
        yield
    finally:
        repair()


def answered_on_link(env, host: str) -> list[str]:
    """The lines for `host` answering on the experimental LAN for each of its control addresses, as every other
    host on its segment probes it (named: three, then how many more)."""
    lab = env.lab
    probers = sorted(h.name for h in lab.hosts if h.name != host and h.ip("experimental"))
    who = ", ".join(f"{p}/exp0 (RST)" for p in probers[:3]) + f" and {len(probers) - 3} more"
    h = lab.host(host)
    return [f"LEAK: {host}: isolation: its {i.segment} address {i.ip} answers on the experimental LAN: on-link "
            f"from {who}" for i in h.interfaces if not i.segment.startswith("experimental")]


def filter_line(env, host: str, diff: str) -> str:
    return f"LEAK: {host}: filter: table inet wt_isolation is not the one the lab installed: {diff}"


def test_the_lab_is_isolated_to_begin_with(env):
    assert check(env) == (0, [])


def test_a_flushed_filter(env):
    ip = env.lab.host("blade3").ip("experimental")
    with broken(env, "blade3", "nft flush table inet wt_isolation", lambda: reload_filter(env, "blade3")):
        rc, lines = check(env)
    assert rc == 1
    assert lines == sorted([filter_line(env, "blade3", (
        f"chain input has 0 rule(s) where the lab installed 2: missing 'iifname {{ \"exp0\" }} ip daddr != "
        f"{{ {ip} }} drop'; missing 'iifname {{ \"mgmt0\", \"admin0\" }} ip daddr {{ {ip} }} drop'")),
        *answered_on_link(env, "blade3")])


def test_a_rule_deleted(env):
    ip = env.lab.host("blade7").ip("experimental")
    cmd = ("nft delete rule inet wt_isolation input handle "
           "$(nft -a list chain inet wt_isolation input | awk '/daddr !=/ {print $NF}')")
    with broken(env, "blade7", cmd, lambda: reload_filter(env, "blade7")):
        rc, lines = check(env)
    assert rc == 1
    assert lines == sorted([filter_line(env, "blade7", (
        f"chain input has 1 rule(s) where the lab installed 2: missing 'iifname {{ \"exp0\" }} ip daddr != "
        f"{{ {ip} }} drop'")), *answered_on_link(env, "blade7")])


def test_the_table_deleted(env):
    with broken(env, "injector", "nft delete table inet wt_isolation", lambda: reload_filter(env, "injector")):
        rc, lines = check(env)
    assert rc == 1
    assert lines == sorted(["LEAK: injector: filter: table inet wt_isolation is MISSING",
                            *answered_on_link(env, "injector")])


def test_the_gateways_forward_chain_set_to_accept(env):
    senders = [h.name for h in env.lab.hosts if h.ip("experimental") and h.name != "gateway"]
    admin = env.lab.host("admin-server").ip("admin")
    with broken(env, "gateway", "nft chain inet wt_isolation forward '{ policy accept; }'",
                lambda: reload_filter(env, "gateway")):
        rc, lines = check(env)
    assert rc == 1
    assert lines[0] == filter_line(env, "gateway", "chain forward policy is accept where the lab installed drop")
    # what came out on the admin LAN: one SYN from every host's experimental address (the gateway is not on
    # the management LAN, so those towards it find no route)
    assert len(lines) == 2 and lines[1].startswith(
        f"LEAK: gateway: forwarding: {len(senders)} packet(s) from the experimental LAN crossed its control "
        "interfaces while every host sent towards them, e.g. 198.18.8.")
    assert lines[1].endswith(f" -> {admin} out of admin0 (proto 6, port 9)")


def test_forwarding_turned_on_with_a_route_through_it(env):
    inj = env.lab.host("injector").ip("admin")

    def repair():
        sh(env, "injector", "sysctl -qw net.ipv4.ip_forward=0")
        sh(env, "admin-server", f"ip route del 198.18.8.0/22 via {inj}")

    with broken(env, "injector", "sysctl -qw net.ipv4.ip_forward=1", repair):
        sh(env, "admin-server", f"ip route add 198.18.8.0/22 via {inj}")
        rc, lines = check(env)
    assert rc == 1
    assert "LEAK: injector: forwarding: forwarding is ON (only the gateway may forward)" in lines
    assert f"LEAK: admin-server: routes: route to 198.18.8.0/22 via {inj}, which is not the lab's gateway" in lines
    assert any(line.startswith("LEAK: admin-server: isolation: reaches experimental address 198.18.8.1") for line in lines)


def test_an_address_from_another_lan(env):
    own = env.lab.host("blade2").iface("admin").address
    with broken(env, "blade2", "ip addr add 198.18.8.250/22 dev admin0",
                lambda: sh(env, "blade2", "ip addr del 198.18.8.250/22 dev admin0")):
        rc, lines = check(env)
    assert rc == 1
    assert f"LEAK: blade2: addresses: admin0 has ['{own}', '198.18.8.250/22'], declared {own}: 198.18.8.250/22 " \
           "is not on its LAN" in lines


def test_every_repair_left_the_lab_isolated(env):
    assert check(env) == (0, [])


def test_the_filter_nft_lists_back_is_the_model_for_every_host_of_the_shipped_labs(tmp_path):
    """nft prints sets sorted and a set of one bare: the model must read back as itself from the real nft."""
    ns = f"wtcheck{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        for f in ("paper-testbed.yaml", "stopping-speed.yaml", "vm-stopping-speed.yaml"):
            for h in load_lab(LABS / f).hosts:
                if isolation.ruleset(h) is None:
                    continue
                nftables.load(ns, isolation.ruleset(h))
                out = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet",
                                      isolation.TABLE], capture_output=True, text=True, check=True).stdout
                subprocess.run(["ip", "netns", "exec", ns, "nft", "delete", "table", "inet", isolation.TABLE],
                               check=True)
                assert isolation.differences(isolation.chains(h), isolation.loaded(json.loads(out))) == [], (f, h.name)
    finally:
        subprocess.run(["ip", "netns", "del", ns])
