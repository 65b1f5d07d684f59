"""The packet filter that keeps a dual-homed lab host's LANs apart (provider-independent nftables text).

Linux accepts a packet for any of its addresses on any interface (the weak host model), so without this a
worm on the experimental LAN could reach a blade's or the gateway's *admin* address — its sshd — through
the experimental interface. Every host with an experimental interface gets table `inet wt_isolation`:
- input: from an experimental interface, only to that side's own addresses; from admin/management, never
  to an experimental address; the sniffer's passive ports accept nothing at all;
- forward (the gateway only): between experimental interfaces, nothing else.
"""

from __future__ import annotations

from .topology import Host

TABLE = "wt_isolation"


def ruleset(host: Host) -> str | None:
    exp = [i for i in host.interfaces if i.segment.startswith("experimental")]
    if not exp:
        return None
    ctl = [i for i in host.interfaces if not i.segment.startswith("experimental")]
    exp_ips = sorted(i.ip for i in exp if i.ip)
    lines = [f"table inet {TABLE} {{", "  chain input {", "    type filter hook input priority 0; policy accept;"]
    passive = [i.ifname for i in exp if i.mirror]
    if passive:
        lines.append(f"    iifname {{ {', '.join(_q(n) for n in passive)} }} drop")
    active = [i.ifname for i in exp if not i.mirror]
    if active:
        lines.append(f"    iifname {{ {', '.join(_q(n) for n in active)} }} ip daddr != {{ {', '.join(exp_ips)} }} drop")
    if ctl and exp_ips:
        lines.append(f"    iifname {{ {', '.join(_q(i.ifname) for i in ctl)} }} ip daddr {{ {', '.join(exp_ips)} }} drop")
    lines.append("  }")
    if host.forwarding:
        lines += ["  chain forward {", "    type filter hook forward priority 0; policy drop;",
                  '    iifname "exp*" oifname "exp*" accept', "  }"]
    lines.append("}")
    return "\n".join(lines) + "\n"


def _q(name: str) -> str:
    return f'"{name}"'
