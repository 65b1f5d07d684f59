"""The event log: lines the readers of docs/event-logs.md can parse, and a cheap look at a log's tail."""

from __future__ import annotations

import errno
import json

from testworm.drivers import _attempt_line
from testworm.eventlog import EventLog, last_event, read_events

DOC_ATTEMPT_KEYS = ["event", "i", "t_mono", "t_wall", "due_mono", "t_done_mono", "src", "sport", "dst", "dport",
                    "protocol", "outcome", "generation"]


def test_attempt_lines_are_the_documented_json():
    line = _attempt_line(3, 812.2, 1764050000.21, 812.2, 812.201, "198.18.8.2", 40112, "198.18.8.17", 8080,
                         "tcp", "refused", 0, errno.ECONNREFUSED)
    rec = json.loads(line)
    assert list(rec) == DOC_ATTEMPT_KEYS and line.endswith("}\n") and line.count("\n") == 1
    assert rec == {"event": "attempt", "i": 3, "t_mono": 812.2, "t_wall": 1764050000.21, "due_mono": 812.2,
                   "t_done_mono": 812.201, "src": "198.18.8.2", "sport": 40112, "dst": "198.18.8.17",
                   "dport": 8080, "protocol": "tcp", "outcome": "refused", "generation": 0}
    rec = json.loads(_attempt_line(0, 1.0, 2.0, 1.0, 1.5, "198.18.8.2", 1, "198.18.8.9", 80, "tcp",
                                   "unreachable", 1, errno.EHOSTUNREACH))
    assert rec["errno"] == "EHOSTUNREACH"
    rec = json.loads(_attempt_line(0, 1.0, 2.0, 1.0, 1.5, "198.18.8.2", 1, "198.18.8.9", 80, "tcp", "timeout",
                                   1, errno.ETIMEDOUT, aborted=True))
    assert rec["aborted"] is True and "errno" not in rec


def test_event_records_start_with_event_and_both_clocks(tmp_path):
    path = tmp_path / "x.jsonl"
    log = EventLog(str(path))
    log.event("start", pid=1, params={"rate": 1.0})
    log.event("stop", reason="lifetime", attempts=0)
    log.close()
    recs = read_events(str(path))
    assert [list(r)[:3] for r in recs] == [["event", "t_mono", "t_wall"]] * 2
    assert recs[1]["t_mono"] >= recs[0]["t_mono"]


def test_last_event_reads_only_the_tail(tmp_path):
    path = tmp_path / "big.jsonl"
    log = EventLog(str(path))
    log.event("start")
    for i in range(20000):
        log.add(f'{{"event": "attempt", "i": {i}}}\n')
    log.event("stop", reason="max_attempts", attempts=20000)
    log.close()
    assert last_event(str(path), "stop", tail=4096)["attempts"] == 20000
    assert last_event(str(path), "start", tail=4096) is None  # not in the tail: not searched
    assert last_event(str(tmp_path / "missing"), "stop") is None
