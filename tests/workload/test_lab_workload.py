"""The workload in a namespace lab: servers on two hosts, a client session against them, captured on the
client's wire. Every scheduled connection is answered, the delays seen on the wire are small, the same seed
gives the same schedule twice, a replayed trace the same destinations twice, and refusals and timeouts are
logged as such."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.minilab import MiniLab
from tests.throttle.netlab import need_tools
from testworm.eventlog import read_events
from workload.analysis import analyse

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
TRACE = Path(__file__).parent / "data" / "trace.csv"


def wl(*args: str) -> list[str]:
    return ["env", f"PYTHONPATH={REPO}", sys.executable, "-m", "workload", *args]


def wait_for(pred, what: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    need_tools("tcpdump")
    tmp = tmp_path_factory.mktemp("wl")
    with MiniLab({"c": ["lan1"], "s1": ["lan1"], "s2": ["lan1"], "s3": ["lan1"]}) as lab:
        for h in ("s1", "s2"):
            a = lab.addr(h)
            log = tmp / f"serve-{h}.jsonl"
            lab.popen(h, wl("serve", "--tcp", f"{a}:8080", "--udp", f"{a}:5353", "--log", str(log),
                            "--lifetime", "120"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_for(lambda log=log: log.exists() and "listening" in log.read_text(), f"the servers on {h}")
        lab.tmp = tmp
        yield lab


def session(lab, name: str, *args: str, capture: bool = False) -> tuple[list[dict], Path | None]:
    log, pcap = lab.tmp / f"{name}.jsonl", lab.tmp / f"{name}.pcap"
    dump = None
    if capture:
        # --immediate-mode: without it the last packets can still sit in the kernel's ring when tcpdump stops
        dump = lab.popen("c", ["tcpdump", "-i", "lan1", "-n", "-U", "--immediate-mode", "--time-stamp-precision",
                               "nano", "-w", str(pcap), "tcp[tcpflags] & tcp-syn != 0 or udp"],
                         stderr=subprocess.PIPE, text=True)
        line = ""
        while "listening on" not in line:
            line = dump.stderr.readline()
            assert line or dump.poll() is None, "tcpdump did not start"
    r = lab.run("c", wl("run", "--allow", "198.18.201.0/24", "--log", str(log), *args), timeout=60)
    assert r.returncode == 0, r.stderr
    if dump is not None:
        time.sleep(0.2)
        dump.send_signal(signal.SIGINT)
        dump.wait(timeout=10)
    evs = read_events(str(log))
    assert evs[0]["event"] == "start" and evs[-1]["event"] == "stop"
    return evs, (pcap if capture else None)


def conns(evs):
    return sorted((e for e in evs if e["event"] == "conn"), key=lambda e: e["i"])


def test_every_scheduled_connection_is_answered_and_the_wire_delay_is_small(lab):
    servers = [lab.addr("s1"), lab.addr("s2")]
    evs, pcap = session(lab, "gen", "--servers", *servers, "--rate", "20", "--duration", "2", "--burst", "2",
                        "--udp-fraction", "0.3", "--seed", "7", capture=True)
    start, cs = evs[0], conns(evs)
    assert len(cs) == start["connections"] > 20 and evs[-1]["reason"] == "done"
    assert Counter(c["outcome"] for c in cs) == {"ok": len(cs)}
    assert {c["protocol"] for c in cs} == {"tcp", "udp"}
    assert all(c["src"] == lab.addr("c") and c["dst"] in servers for c in cs)
    # the servers saw each connection exactly once, by the protocol and to the server scheduled
    seen = [(e["conn"], e["protocol"], e["dst"]) for h in ("s1", "s2")
            for e in read_events(str(lab.tmp / f"serve-{h}.jsonl")) if e["event"] == "request"
            and e["sport"] in {c["sport"] for c in cs}]
    assert sorted(seen) == sorted((c["i"], c["protocol"], c["dst"]) for c in cs)
    rows, s = analyse(str(lab.tmp / "gen.jsonl"), str(pcap))
    assert (s["on_wire"], s["not_on_wire"], s["syn_retransmissions"], s["dropped"]) == (len(cs), 0, 0, 0)
    assert s["delay_wire_s"]["p50"] < 0.01 and s["delay_wire_s"]["max"] < 0.25, s["delay_wire_s"]
    assert all(r["wire_s"] >= r["send_s"] - 0.001 for r in rows)  # the SYN leaves after connect() was called
    assert s["delay_established_s"]["n"] == sum(c["protocol"] == "tcp" for c in cs)
    assert s["delay_answer_s"]["n"] == len(cs) and s["delay_answer_s"]["max"] < 0.5


def test_the_same_seed_twice_gives_the_same_schedule(lab):
    args = ["--servers", lab.addr("s1"), lab.addr("s2"), "--rate", "30", "--duration", "1", "--burst", "3",
            "--popularity", "uniform", "--udp-fraction", "0.5", "--seed", "42"]
    runs = [session(lab, f"seed{k}", *args)[0] for k in range(2)]
    key = [[(c["i"], c["t_sched"], c["page"], c["dst"], c["dport"], c["protocol"]) for c in conns(e)] for e in runs]
    assert key[0] == key[1] and len(key[0]) > 10
    r = lab.run("c", wl("schedule", *args, "--format", "summary"))
    assert runs[0][0]["fingerprint"] == runs[1][0]["fingerprint"] == json.loads(r.stdout)["fingerprint"]
    assert all(c["outcome"] == "ok" for e in runs for c in conns(e))


def test_a_trace_replayed_twice_gives_the_same_destinations(lab):
    servers = [lab.addr("s1"), lab.addr("s2")]
    runs = [session(lab, f"trace{k}", "--servers", *servers, "--trace", str(TRACE), "--wrap")[0] for k in range(2)]
    dest = [[(c["t_sched"], c["dst"], c["protocol"], c["dport"]) for c in conns(e)] for e in runs]
    assert dest[0] == dest[1]
    assert [d[1] for d in dest[0]] == [servers[k % 2] for k in (0, 1, 0, 2, 1, 0, 3, 2, 1, 0)]
    assert all(c["outcome"] == "ok" for e in runs for c in conns(e))


def test_refusals_and_timeouts_are_logged(lab):
    trace = lab.tmp / "refuse.csv"
    trace.write_text("0,0,tcp,8080\n0,0,udp,5353\n0,1,tcp,8080\n")
    evs, _ = session(lab, "refuse", "--servers", lab.addr("s3"), "198.18.201.99", "--trace", str(trace),
                     "--timeout", "0.5")
    got = [(c["dst"], c["protocol"], c["outcome"], c.get("stage")) for c in conns(evs)]
    assert got == [(lab.addr("s3"), "tcp", "refused", None), (lab.addr("s3"), "udp", "refused", None),
                   ("198.18.201.99", "tcp", "timeout", "connect")]
    assert evs[-1]["outcomes"] == {"refused": 2, "timeout": 1}


JUNK = """
import json, socket, sys
host = sys.argv[1]
out = {}
with socket.create_connection((host, 8080), timeout=5) as s:
    s.sendall(b"POST /wl/1 HTTP/1.0\\r\\n\\r\\n")
    out["post"] = s.recv(100).decode()
with socket.create_connection((host, 8080), timeout=5) as s:
    s.sendall(b"GET /wl/1 HTTP/1.0\\r\\n" + b"A" * 5000)
    try:
        out["oversized"] = s.recv(100).decode()
    except ConnectionResetError:  # closed with our excess bytes unread
        out["oversized"] = "reset"
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.settimeout(5)
u.sendto(b"hello", (host, 5353))
out["udp"] = u.recv(100).decode()
print(json.dumps(out))
"""


def test_the_servers_answer_bad_requests_and_log_them(lab):
    r = lab.run("c", [sys.executable, "-c", JUNK, lab.addr("s2")], timeout=30)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["post"].startswith("HTTP/1.0 400 Bad Request") and out["udp"] == "WLE1 bad-request\n"
    assert out["oversized"] in ("", "reset")  # closed without an answer
    bad = [e for e in read_events(str(lab.tmp / "serve-s2.jsonl")) if e["event"] == "bad_request"]
    assert [(e["protocol"], e["why"]) for e in bad[-3:]] == [("tcp", "not a GET"), ("tcp", "oversized"),
                                                             ("udp", "not WLQ1")]


def test_a_server_that_cannot_listen_fails_at_run_time(lab):
    r = lab.run("s1", wl("serve", "--tcp", f"{lab.addr('s2')}:8080", "--log", str(lab.tmp / "nolisten.jsonl")))
    assert (r.returncode, r.stderr) == (1, "workload: cannot listen: Cannot assign requested address\n")
    assert read_events(str(lab.tmp / "nolisten.jsonl"))[-1]["reason"] == "error"
