"""One real capture: tcpdump in a namespace host records SYNs and UDP datagrams sent with Python sockets from
another; the reader's counts equal what was sent and what tshark reads, and a worm-format log of the sends
lines up with the capture on wall-clock time."""

from __future__ import annotations

import io
import json
import select
import shutil
import signal
import subprocess
import time

import pytest
from rich.console import Console

from orchestrator.analysis.attempts import extract_attempts, ip_to_int, source_timelines
from orchestrator.analysis.pcap import read_capture
from orchestrator.cli.analyse import analyse
from tests.support.minilab import MiniLab

from .capgen import TSHARK_SYN, TSHARK_UDP, tshark_counts, tshark_fields

TCP_PORTS = (20001, 20002, 20003, 20004, 20005)  # closed on b: each connect() is one SYN, answered by RST
UDP_PORTS = (30001, 30002, 30001)  # two destinations, three datagrams

SENDER = r"""
import json, socket, sys, time
src, dst = sys.argv[1], sys.argv[2]
tcp_ports = [int(p) for p in sys.argv[3].split(",")]
udp_ports = [int(p) for p in sys.argv[4].split(",")]
def log(**kw):
    kw.setdefault("t_mono", time.monotonic()); kw.setdefault("t_wall", time.time())
    print(json.dumps(kw), flush=True)
log(event="start", pid=0, generation=0, params={"rate": 20.0, "protocol": "mixed"})
i = 0
for port in tcp_ports:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((src, 0)); s.settimeout(2.0)
    sport = s.getsockname()[1]
    tm, tw = time.monotonic(), time.time()
    try:
        s.connect((dst, port)); outcome = "connected"
    except ConnectionRefusedError:
        outcome = "refused"
    except OSError:
        outcome = "timeout"
    s.close()
    log(event="attempt", i=i, t_mono=tm, t_wall=tw, src=src, sport=sport, dst=dst, dport=port, protocol="tcp",
        outcome=outcome)
    i += 1
    time.sleep(0.05)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((src, 0))
for port in udp_ports:
    tm, tw = time.monotonic(), time.time()
    u.sendto(b"probe", (dst, port))
    log(event="attempt", i=i, t_mono=tm, t_wall=tw, src=src, sport=u.getsockname()[1], dst=dst, dport=port,
        protocol="udp", outcome="sent")
    i += 1
    time.sleep(0.05)
log(event="stop", reason="max_attempts", attempts=i)
"""


def _wait_listening(proc: subprocess.Popen, timeout: float = 10.0) -> str:
    """Read tcpdump's stderr until it says it is listening (the capture is live)."""
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and b"listening on" not in seen:
        ready, _, _ = select.select([proc.stderr], [], [], 0.1)
        if ready:
            chunk = proc.stderr.read1(4096)
            if not chunk:
                break
            seen += chunk
    return seen.decode(errors="replace")


@pytest.mark.root
def test_real_capture_in_a_namespace_lab(tmp_path):
    if not shutil.which("tcpdump"):
        pytest.skip("tcpdump is not installed")
    pcap = tmp_path / "real.pcap"
    worm_log = tmp_path / "worm.jsonl"
    with MiniLab({"a": ["lan1"], "b": ["lan1"]}) as lab:
        a, b = lab.addr("a"), lab.addr("b")
        assert a.startswith("198.18.") and b.startswith("198.18.")
        # --immediate-mode: without it packets wait in the kernel ring for up to a second, and tcpdump
        # stopped by SIGINT before then counts them "received by filter" but never writes them
        dump = lab.popen("b", ["tcpdump", "-i", "lan1", "-n", "-U", "--immediate-mode", "-s", "262144", "-Z", "root",
                               "-w", str(pcap)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        said = _wait_listening(dump)
        assert "listening on" in said, f"tcpdump did not start: {said}"
        r = lab.run("a", ["python3", "-c", SENDER, a, b, ",".join(map(str, TCP_PORTS)), ",".join(map(str, UDP_PORTS))],
                    timeout=30, check=True)
        worm_log.write_text(r.stdout)
        time.sleep(0.3)
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=10)
        tail = dump.stderr.read().decode(errors="replace")
        assert dump.returncode == 0, tail
        assert "0 packets dropped by kernel" in tail, tail
        captured = int(tail.split(" packets captured")[0].split()[-1])

    pk = read_capture(pcap)
    assert not pk.partial and len(pk) == captured > 0
    att = extract_attempts(pk)
    mine = att.select(att.src == ip_to_int(a))
    assert mine.totals() | {"packets": 0} == {"packets": 0, "syn_attempts": len(TCP_PORTS), "syn_retransmissions": 0,
                                               "udp_attempts": len(set(UDP_PORTS)), "udp_datagrams": len(UDP_PORTS)}
    assert sorted(mine.dport[mine.proto == 6].tolist()) == list(TCP_PORTS)
    (tl,) = source_timelines(att, sources=[a])
    assert tl.distinct_destinations == 1

    # the same file through tshark: totals, and the per-frame SYN/UDP selections
    totals = att.totals()
    theirs = tshark_counts(pcap)
    assert {k: totals[k] for k in theirs} == theirs
    assert len(tshark_fields(pcap, TSHARK_SYN)) == totals["syn_attempts"]
    assert len(tshark_fields(pcap, TSHARK_UDP)) == totals["udp_datagrams"]

    # the sender's log lines up with the capture on wall-clock time: every attempt is on the wire
    buf = io.StringIO()
    assert analyse(pcap, None, worm_log, True, Console(file=buf, width=200)) == 0
    d = json.loads(buf.getvalue())
    assert d["errors"] == 0, [f for f in d["findings"] if f["severity"] == "error"]
    assert not [f for f in d["findings"] if f["code"] in ("worm_attempt_not_on_wire", "wire_attempt_not_in_worm_log")]
    (m,) = d["metrics"]["sources"]
    assert m["src"] == a and m["worm_attempts"] == len(TCP_PORTS) + len(UDP_PORTS)
    assert m["wire_attempts"] == len(TCP_PORTS) + len(set(UDP_PORTS))
