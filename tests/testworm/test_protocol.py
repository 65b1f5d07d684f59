"""The trigger protocol: authenticated, addressed, fresh and never replayed; bad input is refused, by reason."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testworm.errors import ProtocolError, UsageError
from testworm.protocol import (
    MAX_MESSAGE,
    NonceCache,
    decode_reply,
    decode_request,
    encode_error,
    encode_reply,
    encode_request,
    load_key,
)

KEY = b"k" * 32
HERE = "198.18.201.2:7000"
NOW = 1_800_000_000.0


def req(**kw):
    line, nonce = encode_request(kw.pop("key", KEY), kw.pop("cmd", "trigger"), to=kw.pop("to", HERE),
                                 generation=kw.pop("generation", 1), params=kw.pop("params", {"rate": 5}),
                                 ts=kw.pop("ts", NOW), **kw)
    return line, nonce


def decode(line, nonces=None, now=NOW):
    return decode_request(KEY, line, local=HERE, nonces=NonceCache(60.0) if nonces is None else nonces, now=now)


def test_round_trip():
    line, nonce = req()
    r = decode(line)
    assert (r.cmd, r.nonce, r.to, r.generation, r.params) == ("trigger", nonce, HERE, 1, {"rate": 5})
    assert line.endswith(b"\n") and line.startswith(b"TWRM1 ")


@pytest.mark.parametrize("mutate, reason", [
    (lambda line: line.replace(b"TWRM1 ", b"HELLO "), "malformed"),
    (lambda line: b"GET / HTTP/1.0\r\n", "malformed"),
    (lambda line: b"\n", "malformed"),
    (lambda line: line[:-1] + b" extra\n", "malformed"),
    (lambda line: b"TWRM1 !!!! ????\n", "malformed"),
    (lambda line: b"TWRM1 " + b"A" * MAX_MESSAGE + b" x\n", "oversized"),
])
def test_malformed_and_oversized(mutate, reason):
    line, _ = req()
    with pytest.raises(ProtocolError) as ei:
        decode(mutate(line))
    assert ei.value.reason == reason


def test_wrong_key_is_refused():
    line, _ = req(key=b"w" * 32)
    with pytest.raises(ProtocolError, match="bad-mac"):
        decode(line)


def test_tampered_payload_is_refused():
    line, _ = req()
    magic, payload, mac = line.rstrip(b"\n").split(b" ")
    body = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    body["generation"] = 0
    forged = base64.urlsafe_b64encode(json.dumps(body).encode()).rstrip(b"=")
    with pytest.raises(ProtocolError, match="bad-mac"):
        decode(b" ".join((magic, forged, mac)) + b"\n")


def test_replay_is_refused_and_fresh_nonces_are_not():
    cache = NonceCache(60.0)
    line, _ = req()
    decode(line, cache)
    with pytest.raises(ProtocolError, match="replay"):
        decode(line, cache)
    decode(req()[0], cache)  # a new nonce is fine
    assert len(cache) == 2


@pytest.mark.parametrize("skew", [-61.0, 61.0, -1e9])
def test_stale_or_future_timestamp_is_refused(skew):
    line, _ = req(ts=NOW + skew)
    with pytest.raises(ProtocolError, match="stale"):
        decode(line)


def test_a_trigger_meant_for_another_host_is_refused():
    line, _ = req(to="198.18.201.3:7000")
    with pytest.raises(ProtocolError, match="wrong-host"):
        decode(line)


def test_authenticated_but_ill_formed_requests_are_refused():
    for bad in ({"cmd": "format-disk"}, {"nonce": "xyz"}, {"generation": -1}, {"params": [1]}):
        body = {"v": 1, "cmd": "trigger", "nonce": "a" * 32, "ts": NOW, "to": HERE, "generation": 0,
                "params": {}, **bad}
        data = json.dumps(body).encode()
        import hashlib
        import hmac
        mac = hmac.new(KEY, b"testworm/1 request\n" + data, hashlib.sha256).digest()
        line = b" ".join((b"TWRM1", base64.urlsafe_b64encode(data).rstrip(b"="),
                          base64.urlsafe_b64encode(mac).rstrip(b"="))) + b"\n"
        with pytest.raises(ProtocolError, match="bad-request"):
            decode(line)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash_the_decoder(data):
    try:
        decode(data)
    except ProtocolError as exc:
        assert exc.reason in {"malformed", "oversized", "bad-mac"}


def test_nonce_cache_is_bounded_and_forgets_expired_nonces():
    c = NonceCache(window_s=10.0, cap=3)
    for k in range(3):
        assert c.add(f"{k:032x}", ts=100.0, now=100.0)
    with pytest.raises(ProtocolError, match="busy"):
        c.add("f" * 32, ts=105.0, now=105.0)   # all three still inside the window
    assert c.add("e" * 32, ts=111.0, now=111.0)  # the old ones expired and were dropped
    assert len(c) == 1


def test_replies_are_authenticated_and_bound_to_the_request():
    body = {"ok": True, "cmd": "status", "state": {"state": "idle"}}
    rep = encode_reply(KEY, "n" * 32, body)
    assert decode_reply(KEY, "n" * 32, rep)["state"] == {"state": "idle"}
    with pytest.raises(ProtocolError, match="bad-mac"):
        decode_reply(KEY, "m" * 32, rep)        # a reply to another request
    with pytest.raises(ProtocolError, match="bad-mac"):
        decode_reply(b"x" * 32, "n" * 32, rep)  # another key
    assert decode_reply(KEY, "n" * 32, encode_error("replay")) == \
        {"ok": False, "error": "replay", "authenticated": False}


def test_key_files(tmp_path):
    with pytest.raises(UsageError, match="cannot read key file"):
        load_key(str(tmp_path / "missing"))
    short = tmp_path / "short"
    short.write_text("tooshort\n")
    with pytest.raises(UsageError, match="at least 16"):
        load_key(str(short))
    good = tmp_path / "good"
    good.write_text("  " + "ab" * 16 + "\n")
    assert load_key(str(good)) == b"ab" * 16



@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "cmd", "nonce", "ts", "to", "generation", "params", "x"]),
                       st.none() | st.booleans() | st.integers(min_value=-(10**400), max_value=10**400)
                       | st.floats() | st.text(max_size=40) | st.lists(st.integers(), max_size=3)
                       | st.dictionaries(st.text(max_size=5), st.integers(), max_size=3)))
def test_authenticated_garbage_is_refused_by_reason_never_crashes(body):
    import hashlib
    import hmac
    data = json.dumps(body).encode()
    mac = hmac.new(KEY, b"testworm/1 request\n" + data, hashlib.sha256).digest()
    line = b" ".join((b"TWRM1", base64.urlsafe_b64encode(data).rstrip(b"="),
                      base64.urlsafe_b64encode(mac).rstrip(b"="))) + b"\n"
    try:
        decode(line)
    except ProtocolError as exc:
        assert exc.reason in {"bad-request", "stale", "wrong-host", "oversized"}
