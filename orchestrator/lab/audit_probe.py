"""Run inside one lab host by `testbed check` (standard library only; the plan is the first line of stdin, this
program the rest, started by check.probe_argv).

Prints one JSON object: interfaces with addresses and TX counters, IPv4 routes, forwarding sysctls, the
isolation table as `nft -j` lists it, the outcome of TCP connect probes to *lab* addresses, routing lookups
(`ip route get`, which sends nothing) for the machine's uplink addresses, and two kinds of leak probe that need
no route, no ARP and no change to the host:
- frames: TCP SYNs written raw (AF_PACKET) onto an experimental interface, addressed to a neighbour's MAC on
  that segment (on-link) or to the gateway's (through it), for a *control-LAN* address. Any SYN-ACK or RST
  coming back is a leak; the host's own routes, neighbour table and reverse-path filter are never involved.
- watch (the gateway): every IPv4 packet with an experimental source crossing its control interfaces, while
  every other host sends its frames — a forward path is caught where it leaks, whether or not anything
  answers. Senders check in over TCP on the gateway's experimental address (`beacon`) before they send and
  say "done" after, so the watch is open for all of them and ends as soon as all have been heard.
"""

import errno
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import time

ETH_P_ALL, ETH_P_IP = 0x0003, 0x0800    # a socket sees frames going out only when it takes every protocol
PACKET_OUTGOING = 4
SYN, RST, ACK = 0x02, 0x04, 0x10


def sh(argv):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return p.returncode, p.stdout, p.stderr
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, "", str(exc)


def ip_json(args):
    rc, out, _ = sh(["ip", "-j", *args])
    try:
        return json.loads(out) if rc == 0 and out.strip() else []
    except ValueError:
        return []


def interfaces():
    out = []
    for a in ip_json(["-s", "addr", "show"]):       # with -s, each link's counters too
        out.append({
            "name": a["ifname"], "flags": a.get("flags", []), "operstate": a.get("operstate"),
            "addrs": [f"{x['local']}/{x['prefixlen']}" for x in a.get("addr_info", [])],
            "tx_packets": a.get("stats64", {}).get("tx", {}).get("packets", a.get("stats", {}).get("tx", {}).get("packets")),
            "link_type": a.get("link_type"), "mac": a.get("address"),
        })
    return out


def sysctls(names):
    def rd(path):
        try:
            with open(path) as fh:
                return fh.read().strip()
        except OSError:
            return None
    out = {"ip_forward": rd("/proc/sys/net/ipv4/ip_forward"), "conf": {}}
    for n in names:
        out["conf"][n] = rd(f"/proc/sys/net/ipv4/conf/{n}/forwarding")
    return out


def nft_table():
    rc, out, err = sh(["nft", "-j", "list", "table", "inet", "wt_isolation"])
    if rc != 0:
        return {"missing": True, "error": (err.strip().splitlines() or [f"exit {rc}"])[-1]}
    try:
        return {"json": json.loads(out)}
    except ValueError:
        return {"error": "nft -j printed no JSON (nftables without JSON support?)"}


# ---------------------------------------------------------------- raw frames


def _rand(bits):
    return int.from_bytes(os.urandom(4), "big") >> (32 - bits)


def _csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def syn_frame(src_mac, dst_mac, src, dst, sport, dport, seq):
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, SYN, 1024, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", _csum(s + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    iph = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), _rand(16), 0x4000, 64, 6, 0, s, d)
    iph = iph[:10] + struct.pack("!H", _csum(iph)) + iph[12:]
    return bytes.fromhex(dst_mac.replace(":", "")) + bytes.fromhex(src_mac.replace(":", "")) + b"\x08\x00" + iph + tcp


def parse_ip(frame):
    """(src, dst, proto, sport, dport, tcp flags) of an Ethernet/IPv4 frame, or None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ihl = (frame[14] & 0x0F) * 4
    proto = frame[23]
    src, dst = socket.inet_ntoa(frame[26:30]), socket.inet_ntoa(frame[30:34])
    sport = dport = flags = 0
    if proto in (6, 17) and len(frame) >= 14 + ihl + 4:
        sport, dport = struct.unpack("!HH", frame[14 + ihl:18 + ihl])
        if proto == 6 and len(frame) >= 14 + ihl + 14:
            flags = frame[14 + ihl + 13]
    return src, dst, proto, sport, dport, flags


def packet_socket(dev, proto=ETH_P_IP):
    """A packet socket on `dev` alone. Opened with protocol 0 (it hears nothing) and only then bound to the
    device and protocol: a socket opened with a protocol hears every interface until it is bound — on a VM
    gateway that put the hosts' check-in SYNs on its experimental side into the admin watch as leaks."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
    s.bind((dev, proto))
    s.setblocking(False)
    return s


def drain(sock, dev):
    """(frame, packet type) for every frame waiting on a non-blocking packet socket that came by `dev`."""
    while True:
        try:
            frame, meta = sock.recvfrom(2048)
        except (BlockingIOError, InterruptedError):
            return
        if meta[0] == dev:
            yield frame, meta[2]


class Frames:
    """Send every planned SYN on its interface; note each one that is answered."""

    def __init__(self, groups, port):
        self.port, self.sent, self.answered, self.errors = port, 0, [], []
        self.socks, self.want = {}, {}     # dev -> socket; (dev, sport) -> probe
        self.groups, self.base = groups, 20000 + _rand(14)

    def send(self, via):
        for g in self.groups:
            dev = g["dev"]
            try:
                if dev not in self.socks:
                    self.socks[dev] = packet_socket(dev)
                s, me = self.socks[dev], g["mac"]
            except OSError as exc:
                self.errors.append(f"{dev}: {exc.strerror or exc}")
                continue
            for t in g["to"]:
                if t["via"] != via:
                    continue
                for addr, segment in t["addrs"]:
                    sport = self.base + len(self.want)
                    self.want[(dev, sport)] = {"dev": dev, "addr": addr, "host": t["host"], "segment": segment,
                                               "via": via}
                    try:
                        s.send(syn_frame(me, t["mac"], g["src"], addr, sport, self.port, _rand(32)))
                        self.sent += 1
                    except OSError as exc:
                        self.errors.append(f"{dev} -> {addr}: {exc.strerror or exc}")

    def read(self, dev):
        for frame, pkttype in drain(self.socks[dev], dev):
            if pkttype == PACKET_OUTGOING:     # a reply to another MAC than the host's own still counts
                continue
            p = parse_ip(frame)
            if not p or p[2] != 6 or p[3] != self.port:
                continue
            probe = self.want.get((dev, p[4]))
            if probe and p[0] == probe["addr"] and p[5] & (RST | SYN) and "detail" not in probe:
                probe["detail"] = "SYN-ACK" if p[5] & SYN else "RST"
                self.answered.append(probe)


class Watch:
    """The gateway's view of its control interfaces: any IPv4 packet from an experimental address is a leak."""

    def __init__(self, spec):
        import ipaddress  # the gateway only

        self.nets = [ipaddress.ip_network(n) for n in spec["nets"]]
        self.addr = ipaddress.ip_address
        self.expected, self.heard, self.seen, self.total, self.errors = spec["senders"], 0, [], 0, []
        self.socks = {}
        for dev in spec["ifaces"]:
            try:
                self.socks[dev] = packet_socket(dev, ETH_P_ALL)
            except OSError as exc:
                self.errors.append(f"{dev}: {exc.strerror or exc}")
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("0.0.0.0", spec["port"]))
        self.listener.listen(1024)
        self.listener.setblocking(False)
        self.conns = {}

    def read(self, dev):
        for frame, pkttype in drain(self.socks[dev], dev):
            p = parse_ip(frame)
            if p and any(self.addr(p[0]) in n for n in self.nets):
                self.total += 1
                if len(self.seen) < 20:
                    self.seen.append({"iface": dev, "dir": "out" if pkttype == PACKET_OUTGOING else "in",
                                      "src": p[0], "dst": p[1], "proto": p[2], "dport": p[4]})


def beacon(addr, port, deadline):
    """Connect to the gateway's watch (it may not listen yet); the socket, or the reason it could not."""
    last = "timed out"
    while time.monotonic() < deadline:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(1.0)
        try:
            s.connect((addr, port))
            return s, None
        except OSError as exc:
            last = exc.strerror or str(exc)
            s.close()
            time.sleep(0.05)
    return None, last


# ---------------------------------------------------------------- the event loop


def probe(targets, timeout, frames=None, watch=None):
    """Connect probes, answers to raw frames and the gateway's watch, all on one selector until `timeout` (and,
    for the watch, until every sender said done or its deadline)."""
    sel = selectors.DefaultSelector()
    results, pending = [], {}
    _start_connects(sel, targets, results, pending)
    for dev, s in (frames.socks if frames else {}).items():
        sel.register(s, selectors.EVENT_READ, ("frame", dev))
    if watch:
        for dev, s in watch.socks.items():
            sel.register(s, selectors.EVENT_READ, ("watch", dev))
        sel.register(watch.listener, selectors.EVENT_READ, ("accept", None))
    end = time.monotonic() + timeout
    watch_end = time.monotonic() + watch.deadline if watch else 0.0
    linger = None
    while True:
        now = time.monotonic()
        if watch and linger is None and watch.heard >= watch.expected:
            linger = now + 0.2               # anything a last sender got forwarded is out by then
        stop = max(end, watch_end if linger is None else linger) if watch else end
        if now >= stop or not (pending or frames or watch):      # frames may be answered until the timeout
            break
        for key, _ in sel.select(max(0.0, min(stop - now, 0.1))):
            _event(sel, key, results, pending, frames, watch)
    for s, t in pending.items():
        results.append({**t, "result": "unreachable", "detail": "timeout"})
        s.close()
    return results


def _start_connects(sel, targets, results, pending):
    """A non-blocking connect to every target: in progress (watched for writability), or already answered."""
    for t in targets:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        rc = s.connect_ex((t["addr"], t["port"]))
        if rc in (0, errno.EINPROGRESS):
            sel.register(s, selectors.EVENT_WRITE, ("connect", t))
            pending[s] = t
        else:
            results.append({**t, "result": "refused" if rc == errno.ECONNREFUSED else "unreachable",
                            "detail": errno.errorcode.get(rc, str(rc))})
            s.close()


def _event(sel, key, results, pending, frames, watch):
    """One ready socket: a connect that finished, a frame, the watch's capture, a sender checking in."""
    kind, data = key.data
    if kind == "connect":
        s, t = key.fileobj, data
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        res = "connected" if err == 0 else ("refused" if err == errno.ECONNREFUSED else "unreachable")
        results.append({**t, "result": res, "detail": errno.errorcode.get(err, "ok") if err else "ok"})
        sel.unregister(s)
        s.close()
        del pending[s]
    elif kind == "frame":
        frames.read(data)
    elif kind == "watch":
        watch.read(data)
    elif kind == "accept":
        try:
            c, _ = watch.listener.accept()
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ, ("conn", None))
            watch.conns[c] = b""
        except OSError:
            pass
    elif kind == "conn":
        _checked_in(sel, key.fileobj, watch)


def _checked_in(sel, c, watch):
    """A sender's connection to the watch: it says done, then closes."""
    try:
        chunk = c.recv(64)
    except OSError:
        chunk = b""
    watch.conns[c] += chunk
    if not chunk or b"done" in watch.conns[c]:
        watch.heard += b"done" in watch.conns[c]
        sel.unregister(c)
        c.close()
        del watch.conns[c]


def route_get(addrs):
    out = []
    for a in addrs:
        r = ip_json(["route", "get", a])
        if r:
            out.append({"addr": a, "ok": True, "via": r[0].get("gateway"), "dev": r[0].get("dev")})
        else:
            out.append({"addr": a, "ok": False})
    return out


def in_root_netns():
    mine = os.stat("/proc/self/ns/net").st_ino
    for pid in (1, 2):  # PID 1 may be unreadable in a sandbox; kernel threads live in the root namespace
        try:
            return mine == os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            continue
    return mine == 0xEFFFFFF9  # the kernel's fixed inode of the initial network namespace


def same_kernel(boot_id):
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return not boot_id or fh.read().strip() == boot_id
    except OSError:
        return True


def main():
    plan = json.loads(sys.argv[1])
    watch = None
    if plan.get("watch"):                       # open before anything else: senders wait for it
        watch = Watch(plan["watch"])
        watch.deadline = plan["watch"]["deadline"]
    res = {
        # the machine's root namespace: ours, on the machine's own kernel (a VM's root namespace is its own)
        "netns_is_root": in_root_netns() and same_kernel(plan.get("machine_boot_id")),
        "routes": ip_json(["-4", "route", "show", "table", "all"]),
        "sysctl": sysctls(os.listdir("/proc/sys/net/ipv4/conf")),
        "nft": nft_table() if plan.get("nft") else None,
    }
    frames = Frames(plan.get("frames", []), plan.get("frame_port", 9)) if plan.get("frames") else None
    link = None
    if frames:
        frames.send("on-link")
        b = plan.get("beacon")
        if b:
            link, why = beacon(b["addr"], b["port"], time.monotonic() + b["wait"])
            res["beacon"] = "ok" if link else f"{b['addr']}:{b['port']}: {why}"
        frames.send("gateway")
    res["probes"] = probe(plan.get("probes", []), plan.get("timeout", 0.5), frames, watch)
    if link:
        try:
            link.sendall(b"done\n")
        except OSError:
            pass
        link.close()
    if frames:
        res["frames"] = {"sent": frames.sent, "answered": frames.answered, "errors": frames.errors[:10]}
    if watch:
        res["watch"] = {"expected": watch.expected, "heard": watch.heard, "seen": watch.seen,
                        "seen_total": watch.total, "errors": watch.errors}
    res["route_get"] = route_get(plan.get("uplinks", []))
    res["interfaces"] = interfaces()  # after the probes, so TX counters include anything they caused
    print(json.dumps(res))


if __name__ == "__main__":
    main()
