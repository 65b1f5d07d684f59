"""The daemon's pure parts, without root: packet parsing, event lines, iptables rule text, control addresses."""

from __future__ import annotations

import json
import socket
import struct

import pytest

from throttle import control, rules
from throttle.core import Event, Request, Throttle, ThrottleConfig
from throttle.daemon import event_line, parse_packet, state_line


def ipv4(proto: int, l4: bytes, src="198.18.201.1", dst="198.18.202.9", ihl=5) -> bytes:
    opts = b"\x01" * (4 * (ihl - 5))
    return bytes([0x40 | ihl, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0]) + socket.inet_aton(src) + \
        socket.inet_aton(dst) + opts + l4


def tcp(flags: int, sport=40000, dport=8080) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 0x50, flags, 1024, 0, 0)


def test_parse_packet():
    assert parse_packet(ipv4(6, tcp(0x02))) == ("198.18.201.1", "198.18.202.9", 40000, 8080, "tcp")
    assert parse_packet(ipv4(6, tcp(0x02), ihl=7)) == ("198.18.201.1", "198.18.202.9", 40000, 8080, "tcp")
    assert parse_packet(ipv4(6, tcp(0x12))) == "not-syn"          # SYN-ACK
    assert parse_packet(ipv4(6, tcp(0x10))) == "not-syn"
    assert parse_packet(ipv4(17, struct.pack("!HHHH", 5353, 9, 8, 0))) == \
        ("198.18.201.1", "198.18.202.9", 5353, 9, "udp")
    assert parse_packet(ipv4(1, b"\x08\x00" + b"\x00" * 6)) == "other-protocol"
    assert parse_packet(b"\x60" + b"\x00" * 39) == "not-ipv4"
    assert parse_packet(ipv4(6, b"\x00" * 10)) == "short"


def test_event_lines_are_json():
    e = Event("released", 12.5, "198.18.0.1", "198.18.0.2", 1, 2, "tcp", 3, "head")
    d = json.loads(event_line(e, 12.5001, 1.7e9))
    assert d == {"event": "released", "t_mono": 12.5001, "t_wall": 1.7e9, "src": "198.18.0.1",
                 "dst": "198.18.0.2", "sport": 1, "dport": 2, "proto": "tcp", "queue_len": 3, "reason": "head",
                 "due_mono": 12.5}
    odd = Event("reset", 1.0, 'we"ird\n\u00e9', None, None, None, None, 0, None)
    d = json.loads(event_line(odd, 1.0, 2.0))
    assert d["src"] == 'we"ird\n\u00e9' and d["dst"] is None and "due_mono" not in d
    assert event_line(odd, 1.0, 2.0).count("\n") == 1


def test_rule_text_host_and_gateway():
    host = rules.RuleSpec("host", 3, ("tcp", "udp"), None, False, 42).lines()
    tag = '-m comment --comment "wtb-throttle pid=42 q=3 mode=host"'
    assert host == [
        ":WTB-THROTTLE - [0:0]",
        f"-A WTB-THROTTLE -p tcp --syn -m conntrack --ctstate NEW {tag} -j NFQUEUE --queue-num 3 --queue-bypass",
        f"-A WTB-THROTTLE -p udp -m conntrack --ctstate NEW {tag} -j NFQUEUE --queue-num 3 --queue-bypass",
        f"-I OUTPUT 1 ! -o lo {tag} -j WTB-THROTTLE",
    ]
    gw = rules.RuleSpec("gateway", 0, ("udp",), "lan1", True, 7).lines()
    assert gw[1].endswith("-j NFQUEUE --queue-num 0") and "-p udp" in gw[1] and len(gw) == 3
    assert gw[2].startswith("-I FORWARD 1 -i lan1 -m comment")


SAVED = """-P INPUT ACCEPT
-P FORWARD ACCEPT
-P OUTPUT ACCEPT
-N OTHER
-N WTB-THROTTLE
-A INPUT -p tcp -j OTHER
-A OUTPUT ! -o lo -m comment --comment "wtb-throttle pid=999999 q=3 mode=host" -j WTB-THROTTLE
-A WTB-THROTTLE -p tcp -m tcp --tcp-flags FIN,SYN,RST,ACK SYN -m comment --comment "wtb-throttle pid=999999 q=3 mode=host" -j NFQUEUE --queue-num 3 --queue-bypass
""".splitlines()


def test_rule_text_wire():
    wire = rules.RuleSpec("wire", 2, ("tcp",), "x0-4", False, 9).lines()
    assert wire[-1] == ('-I FORWARD 1 -m physdev --physdev-in x0-4 -m comment --comment "wtb-throttle pid=9 q=2 '
                        'mode=wire" -j WTB-THROTTLE')
    assert "--queue-bypass" in wire[1]


def test_wire_mode_needs_the_bridge_port():
    from throttle.core import ConfigError
    from throttle.daemon import DaemonOptions
    with pytest.raises(ConfigError, match="wire mode needs --interface: the bridge port"):
        DaemonOptions(mode="wire").validate()
    with pytest.raises(ConfigError, match="unknown mode 'hub'; known: host, gateway, wire"):
        DaemonOptions(mode="hub").validate()


def test_stale_rules_are_found_and_removed_by_text():
    ours = rules.ours(SAVED)
    assert len(ours) == 3 and not any("OTHER" in ln for ln in ours)
    assert rules._removal(ours) == [
        '-D OUTPUT ! -o lo -m comment --comment "wtb-throttle pid=999999 q=3 mode=host" -j WTB-THROTTLE',
        "-F WTB-THROTTLE", "-X WTB-THROTTLE"]
    assert rules.live_owner(SAVED) is None          # pid 999999 is not alive


def test_control_addresses():
    assert control.sockaddr("@wtb-throttle") == b"\0wtb-throttle"
    assert control.sockaddr("/run/x.sock") == "/run/x.sock"
    with pytest.raises(control.ControlError):
        control.sockaddr("")


def test_the_state_line_says_what_the_mechanism_holds_now():
    """Started fresh, filled by the host's own traffic: the `state` line the runner asks for just before the
    worm says `full` where the config line said `fresh`."""
    cfg = ThrottleConfig(working_set_size=3)
    th = Throttle(cfg)
    a, b = "198.18.8.2", "198.18.8.3"
    for k, d in enumerate(("198.18.10.254", "198.18.10.253", "198.18.10.252")):
        th.submit(Request(a, d, 50000 + k, 53, "udp", None), 1.0 + k / 10)
    th.submit(Request(b, "198.18.10.254", 50000, 53, "udp", None), 1.5)
    line = state_line(th, cfg, "worm", 2.0, 1.7e9)
    assert cfg.to_dict()["initial_state"] == "fresh"
    assert line["event"] == "state" and line["why"] == "worm" and (line["t_mono"], line["t_wall"]) == (2.0, 1.7e9)
    assert line["sources"][a] == {"working_set": ["198.18.10.254", "198.18.10.253", "198.18.10.252"],
                                  "state": "full", "queue_len": 0, "blocked": False}
    assert line["sources"][b]["state"] == "partial"
    assert line["default"] == {"working_set": [], "state": "fresh"}
    assert json.loads(json.dumps(line)) == line
