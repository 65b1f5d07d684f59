"""Links of a namespace lab's hosts: which have no carrier yet (from `ip -o link`), and every namespace's
interfaces with their state and addresses (via pyroute2)."""

from __future__ import annotations

from orchestrator.providers.netns import namespaces


def links_without_carrier(ip_o_output: str, wanted: list[str]) -> list[str]:
    seen = {}
    for line in ip_o_output.splitlines():
        parts = line.split(":", 2)
        if len(parts) < 3:
            continue
        ifname = parts[1].strip().split("@")[0]
        flags = line[line.find("<") + 1:line.find(">")].split(",")
        seen[ifname] = "LOWER_UP" in flags
    return [w for w in wanted if not seen.get(w, False)]


def inspect_links(ns_names: list[str]) -> dict[str, dict[str, dict[str, str]]]:
    """{ns: {ifname: {"address": "a/len", "state": "UP"|…}}} for every namespace, via pyroute2."""
    if not ns_names:
        return {}
    from pyroute2 import IPRoute

    out: dict[str, dict[str, dict[str, str]]] = {}
    for ns in ns_names:
        with namespaces.entered(ns):
            ipr = IPRoute()
        try:
            links = {}
            for link in ipr.get_links():
                name = link.get_attr("IFLA_IFNAME")
                flags = link["flags"]
                up, carrier = bool(flags & 0x1), bool(flags & 0x10000)
                links[link["index"]] = name
                out.setdefault(ns, {})[name] = {"state": "UP" if up and carrier else ("NO-CARRIER" if up else "DOWN"),
                                                "address": ""}
            for addr in ipr.get_addr(family=2):
                name = links.get(addr["index"])
                if name:
                    out[ns][name]["address"] = f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}"
        finally:
            ipr.close()
    return out
