"""The servers' request parsing and answers (pure), and the client's check of an answer."""

from __future__ import annotations

from workload.client import answer_ok, request
from workload.schedule import Conn
from workload.server import http_answer, parse_http, udp_answer


def test_http_requests_parse_to_their_connection_index():
    assert parse_http(b"GET /wl/17 HTTP/1.0\r\nHost: x\r\n\r\n") == 17
    assert parse_http(b"GET / HTTP/1.1\r\n\r\n") is None          # a GET without an index is still answered
    assert parse_http(b"GET /wl/17 HTTP/1.0\r\nHost: x\r\n") is True  # not complete yet
    assert parse_http(b"POST /wl/1 HTTP/1.0\r\n\r\n") is False
    assert parse_http(b"GET /wl/1\r\n\r\n") is False
    assert parse_http(b"\xff\xfe junk\r\n\r\n") is False
    assert parse_http(b"GET /wl/" + b"9" * 20 + b" HTTP/1.0\r\n\r\n") is None


def test_answers():
    ok = http_answer(3, 10)
    assert ok == (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 10\r\nConnection: close\r\n\r\n"
                  + b"w" * 10)
    assert http_answer(False, 10).startswith(b"HTTP/1.0 400 Bad Request\r\n")
    a, conn, good = udp_answer(b"WLQ1 42 wl42.lab\n", 64)
    assert (conn, good, len(a)) == (42, True, 64) and a.startswith(b"WLA1 42 ") and a.endswith(b"\n")
    assert udp_answer(b"WLQ1 42\n", 0)[0] == b"WLA1 42 \n"
    assert udp_answer(b"hello", 64) == (b"WLE1 bad-request\n", None, False)


def test_the_client_speaks_what_the_servers_answer():
    t = Conn(5, 0.0, 0, 0, "198.18.201.2", "tcp", 8080)
    u = Conn(6, 0.0, 0, 0, "198.18.201.2", "udp", 5353)
    assert request(t) == b"GET /wl/5 HTTP/1.0\r\nHost: 198.18.201.2\r\n\r\n" and parse_http(request(t)) == 5
    assert request(u) == b"WLQ1 6 wl6.lab\n" and udp_answer(request(u), 64)[1:] == (6, True)
    assert answer_ok(t, http_answer(5, 100)[:64]) and not answer_ok(t, http_answer(False, 0))
    assert answer_ok(u, udp_answer(request(u), 64)[0]) and not answer_ok(u, b"WLA1 7 x\n")
