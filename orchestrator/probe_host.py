"""Run inside one lab host by `testbed check` (standard library only, piped to `python3 -`).

Reads a JSON plan from argv[1]; prints one JSON object: interfaces with addresses and TX counters, IPv4
routes, forwarding sysctls, whether the gateway's isolation table is present, the outcome of TCP connect
probes to *lab* addresses, and routing lookups (`ip route get`, which sends nothing) for the machine's
uplink addresses.
"""

import errno
import json
import os
import selectors
import socket
import subprocess
import sys
import time


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
    stats = {li["ifname"]: li for li in ip_json(["-s", "link", "show"])}
    for a in ip_json(["addr", "show"]):
        li = stats.get(a["ifname"], {})
        out.append({
            "name": a["ifname"], "flags": a.get("flags", []), "operstate": a.get("operstate"),
            "addrs": [f"{x['local']}/{x['prefixlen']}" for x in a.get("addr_info", [])],
            "tx_packets": li.get("stats64", {}).get("tx", {}).get("packets", li.get("stats", {}).get("tx", {}).get("packets")),
            "link_type": a.get("link_type"),
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


def probe(targets, timeout):
    sel = selectors.DefaultSelector()
    results, pending = [], {}
    for t in targets:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        if t.get("bind_dev"):
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, t["bind_dev"].encode())
            except OSError as exc:
                results.append({**t, "result": "error", "detail": exc.strerror})
                s.close()
                continue
        rc = s.connect_ex((t["addr"], t["port"]))
        if rc in (0, errno.EINPROGRESS):
            sel.register(s, selectors.EVENT_WRITE, t)
            pending[s] = t
        else:
            results.append({**t, "result": "refused" if rc == errno.ECONNREFUSED else "unreachable",
                            "detail": errno.errorcode.get(rc, str(rc))})
            s.close()
    deadline = time.monotonic() + timeout
    while pending and time.monotonic() < deadline:
        for key, _ in sel.select(max(0.0, deadline - time.monotonic())):
            s, t = key.fileobj, key.data
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            res = "connected" if err == 0 else ("refused" if err == errno.ECONNREFUSED else "unreachable")
            results.append({**t, "result": res, "detail": errno.errorcode.get(err, "ok") if err else "ok"})
            sel.unregister(s)
            s.close()
            del pending[s]
    for s, t in pending.items():
        results.append({**t, "result": "unreachable", "detail": "timeout"})
        s.close()
    return results


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
    ifs = interfaces()
    res = {
        # the machine's root namespace: ours, on the machine's own kernel (a VM's root namespace is its own)
        "netns_is_root": in_root_netns() and same_kernel(plan.get("machine_boot_id")),
        "routes": ip_json(["-4", "route", "show", "table", "all"]),
        "sysctl": sysctls([i["name"] for i in ifs]),
        "isolation_table": sh(["nft", "list", "table", "inet", "wt_isolation"])[0] == 0 if plan.get("nft") else None,
        "probes": probe(plan.get("probes", []), plan.get("timeout", 0.5)),
        "route_get": route_get(plan.get("uplinks", [])),
    }
    res["interfaces"] = interfaces()  # after the probes, so TX counters include anything they caused
    print(json.dumps(res))


if __name__ == "__main__":
    main()
