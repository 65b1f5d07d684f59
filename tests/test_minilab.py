"""The component-test lab itself: hosts reach each other through the bridge, and close() leaves nothing."""

from __future__ import annotations

import subprocess

import pytest

from tests.support.minilab import MiniLab


@pytest.mark.root
def test_minilab_routes_through_gateway_and_cleans_up():
    with MiniLab({"a": ["lan1"], "gw": ["lan1", "lan2"], "t": ["lan2"]}, gateway="gw") as lab:
        t = lab.addr("t")
        probe = "import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect((sys.argv[1], 9)); print(s.getsockname()[0])"
        r = lab.run("a", ["python3", "-c", probe, t], check=True)
        assert r.stdout.strip() == lab.addr("a")
        names = [lab.ns(h) for h in ("a", "gw", "t")] + [lab.switch]
        assert lab.run("gw", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "1"
        assert lab.run("a", ["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip() == "0"
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for n in names:
        assert n not in listed
