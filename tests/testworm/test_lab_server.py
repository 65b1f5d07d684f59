"""The server in real namespaces: forged, replayed and malformed triggers are refused and it keeps serving;
kill stops the scan and refuses triggers until revived."""

from __future__ import annotations

import json
import time

import pytest

from tests.support.minilab import MiniLab
from tests.testworm.labkit import REPO, client, events, keyfile, start_server, status, wait_for

pytestmark = pytest.mark.root


def test_forged_replayed_and_malformed_triggers_are_refused(tmp_path):
    key = keyfile(tmp_path)
    wrong = tmp_path / "wrong.key"
    wrong.write_text("f" * 64 + "\n")
    with MiniLab({"a": ["lan1"], "b": ["lan1"]}) as lab:
        state = start_server(lab, "b", tmp_path, key)
        code, reply, _ = client(lab, "a", "trigger", "b", wrong, "--rate", "10")
        assert code == 1
        assert reply == {"host": f"{lab.addr('b')}:7000", "ok": False, "error": "bad-mac", "authenticated": False}

        r = lab.run("a", ["env", f"PYTHONPATH={REPO}", "python3", "-m", "tests.testworm.wire_probe",
                          lab.addr("b"), "7000", str(key)], timeout=30)
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["first"]["ok"] is True and out["first"]["authenticated"] is True
        assert out["replayed"] == "TWRM1E replay"
        assert out["stale"] == "TWRM1E stale"
        assert out["wrong_host"] == "TWRM1E wrong-host"
        assert out["http"] == "TWRM1E malformed"
        assert out["binary"] == "TWRM1E malformed"
        assert out["oversized"] == "TWRM1E oversized"
        assert out["no_newline"] == "<ProtocolError>"  # closed without a reply, counted as malformed
        assert out["while_slow"] is True and out["while_slow_s"] < 1.0

        # http, binary, oversized, no newline, and the slow client's half line when it hung up
        wait_for(lambda: len(events(state / "server.jsonl", "refused")) == 9, "nine refusals logged")
        st = status(lab, "a", "b", key)
        assert st["state"] == "idle" and st["scans"] == 0 and st["generation"] is None
        assert st["counts"]["malformed"] == 5
        assert st["counts"]["refused"] == 4  # bad-mac, replay, stale, wrong-host
        assert st["counts"]["accepted"] == 3  # the first status, the one beside the slow client, this one
        refusals = [e["reason"] for e in events(state / "server.jsonl", "refused")]
        assert refusals == ["bad-mac", "replay", "stale", "wrong-host", "malformed", "malformed", "oversized",
                            "malformed", "malformed"]
        assert not list(state.glob("scan-*.jsonl"))


def test_kill_stops_the_scan_and_refuses_triggers_until_revived(tmp_path):
    key = keyfile(tmp_path)
    with MiniLab({"a": ["lan1"], "b": ["lan1"]}) as lab:
        state = start_server(lab, "b", tmp_path, key)
        scan = ["--rate", "40", "--targets", "198.18.201.0/24", "--max-attempts", "100000", "--lifetime", "60",
                "--connect-timeout", "0.5"]
        code, reply, err = client(lab, "a", "trigger", "b", key, *scan)
        assert code == 0, (reply, err)
        assert reply["ok"] is True and reply["state"]["state"] == "scanning" and reply["state"]["generation"] == 0
        log = state / "scan-001-gen0.jsonl"
        wait_for(lambda: len(events(log, "attempt")) >= 10, "ten attempts")

        t_kill = time.monotonic()
        code, reply, _ = client(lab, "a", "kill", "b", key)
        assert code == 0 and reply["ok"] is True and reply["state"]["state"] == "killed"
        stop = wait_for(lambda: events(log, "stop"), "the scanner's stop record", timeout=10)[0]
        assert stop["reason"] == "killed"
        assert time.monotonic() - t_kill < 3.0
        n = len(events(log, "attempt"))
        assert stop["attempts"] == n
        time.sleep(0.3)
        assert len(events(log, "attempt")) == n  # nothing after the stop
        exit_ev = wait_for(lambda: events(state / "server.jsonl", "scan_exit"), "scan_exit")[0]
        assert exit_ev["returncode"] == 0 and exit_ev["state"] == "killed"

        code, reply, _ = client(lab, "a", "trigger", "b", key, *scan)
        assert code == 1 and reply["ok"] is False and reply["error"] == "killed: revive first"
        st = status(lab, "a", "b", key)
        assert (st["state"], st["scans"], st["last_stop"]["reason"]) == ("killed", 1, "killed")

        code, reply, _ = client(lab, "a", "revive", "b", key)
        assert code == 0 and reply["state"]["state"] == "idle"
        code, reply, _ = client(lab, "a", "trigger", "b", key, "--rate", "5", "--targets", "198.18.201.1",
                                "--max-attempts", "1")
        assert code == 0 and reply["state"]["scans"] == 2
        wait_for(lambda: status(lab, "a", "b", key)["state"] == "done", "the second scan to finish")
        code, reply, _ = client(lab, "a", "trigger", "b", key, "--rate", "5")
        assert code == 1 and reply["error"] == "already infected (generation 0)"


def test_a_scanner_that_refuses_to_start_is_reported_in_the_status(tmp_path):
    key = keyfile(tmp_path)
    with MiniLab({"a": ["lan1"], "b": ["lan1"]}) as lab:
        state = start_server(lab, "b", tmp_path, key)
        # inside the allow-list (the lab ranges) but with no route from b: the scanner refuses, exit 2
        code, reply, _ = client(lab, "a", "trigger", "b", key, "--rate", "10", "--targets", "198.19.5.0/24")
        assert code == 0 and reply["ok"] is True
        st = wait_for(lambda: (s := status(lab, "a", "b", key))["last_exit"] is not None and s, "the scanner to exit")
        assert (st["state"], st["last_exit"]) == ("done", 2)
        assert st["last_error"].startswith("testworm: no route from this host to the targets (198.19.5.0")
        assert not (state / "scan-001-gen0.jsonl").exists()  # refused before it logged (or sent) anything
