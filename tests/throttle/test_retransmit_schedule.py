"""Measure the sender's SYN retransmissions while the SYN is held in an NFQUEUE, and check the model's schedules.

Three senders at once: through a gateway that holds their SYNs (Linux defaults; and with
tcp_syn_linear_timeouts=0, the pre-linear behaviour), and one whose own OUTPUT hook holds its SYN.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.support.minilab import MiniLab
from tests.throttle.netlab import PY, need_tools
from throttle.model import RETRANSMIT_SCHEDULES

pytestmark = [pytest.mark.root, pytest.mark.slow]

HOLD_S = 5.6

HOLDER = r"""
import json, select, sys, time
from netfilterqueue import NetfilterQueue
held, seen = [], []
def cb(p):
    b = p.get_payload(); ihl = (b[0] & 15) * 4
    seen.append([time.monotonic(), ".".join(map(str, b[12:16])), int.from_bytes(b[ihl:ihl + 2], "big")])
    held.append(p)
q = NetfilterQueue(); q.bind(11, cb, max_len=4096, range=128)
fd = q.get_fd(); print("ready", flush=True)
end = time.monotonic() + float(sys.argv[1])
while time.monotonic() < end:
    if select.select([fd], [], [], 0.05)[0]:
        q.run(block=False)
for p in held:
    p.drop()
print(json.dumps(seen), flush=True)
"""

CONNECT = r"""
import socket, sys, time
s = socket.socket(); s.settimeout(float(sys.argv[2]))
t0 = time.monotonic()
try:
    s.connect((sys.argv[1], 9))
except OSError:
    pass
print(t0, s.getsockname()[1], flush=True)
"""

RULE = ["-p", "tcp", "--syn", "-m", "conntrack", "--ctstate", "NEW", "-j", "NFQUEUE", "--queue-num", "11"]


def test_syn_retransmissions_while_held():
    need_tools("iptables")
    hosts = {"a1": ["lan1"], "a2": ["lan1"], "a3": ["lan1"], "gw": ["lan1", "lan2"], "t": ["lan2"]}
    with MiniLab(hosts, gateway="gw") as lab:
        classic = lab.run("a3", ["sysctl", "-qw", "net.ipv4.tcp_syn_linear_timeouts=0"]).returncode == 0
        lab.run("gw", ["iptables", "-A", "FORWARD", *RULE], check=True)
        lab.run("a1", ["iptables", "-A", "OUTPUT", *RULE], check=True)
        holders = [lab.popen(h, [PY, "-c", HOLDER, str(HOLD_S + 0.3)], stdout=subprocess.PIPE, text=True)
                   for h in ("gw", "a1")]
        for h in holders:
            assert h.stdout.readline().strip() == "ready"
        senders = {h: lab.popen(h, [PY, "-c", CONNECT, lab.addr("t"), str(HOLD_S)], stdout=subprocess.PIPE,
                                text=True) for h in ("a1", "a2", "a3")}
        started = {}
        for h, p in senders.items():
            out, _ = p.communicate(timeout=HOLD_S + 10)
            t0, sport = out.split()
            started[lab.addr(h)] = float(t0)
        seen = []
        for h in holders:
            out, _ = h.communicate(timeout=HOLD_S + 10)
            seen += json.loads(out.strip().splitlines()[-1])

    def offsets(host_addr):
        return [round(t - started[host_addr], 3) for t, src, _ in sorted(seen) if src == host_addr][1:]

    a1, a2, a3 = (lab.addrs[h]["lan1"] for h in ("a1", "a2", "a3"))
    gw_linux = offsets(a2)
    print("gateway, Linux defaults:", gw_linux)
    # linear: 1, 2, 3, 4, 5 s — not the textbook cumulative 1, 3, 7 s
    assert len(gw_linux) == 5
    for got, model in zip(gw_linux, RETRANSMIT_SCHEDULES["linux"], strict=False):
        assert got == pytest.approx(model, abs=0.1)
    # the sender's own OUTPUT hook holding the SYN: Linux does not retransmit a SYN still held in a local queue
    assert offsets(a1) == []
    if classic:
        gw_classic = offsets(a3)
        print("gateway, tcp_syn_linear_timeouts=0:", gw_classic)
        assert len(gw_classic) == 2
        for got, model in zip(gw_classic, RETRANSMIT_SCHEDULES["linux-classic"], strict=False):
            assert got == pytest.approx(model, abs=0.1)
