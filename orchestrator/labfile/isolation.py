"""The packet filter that keeps a dual-homed lab host's LANs apart (provider-independent nftables), and how to
tell whether the filter a host has loaded is still that one.

Linux accepts a packet for any of its addresses on any interface (the weak host model), so without this a
worm on the experimental LAN could reach a blade's or the gateway's *admin* address — its sshd — through
the experimental interface. Every host with an experimental interface gets table `inet wt_isolation`:
- input: from an experimental interface, only to that side's own addresses; from admin/management, never
  to an experimental address; the sniffer's passive ports accept nothing at all;
- forward (the gateway only): between experimental interfaces, nothing else.

The filter is a small model (`chains`) rendered to nft text (`ruleset`, what the netns provider loads and the
libvirt provider puts in a VM's seed) and compared with what `nft -j list table` prints inside the host
(`loaded` and `differences`): a flushed table, a deleted rule or a chain's policy turned to accept is a
difference, however the installed nft prints sets and single values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.labfile.topology import Host

TABLE = "wt_isolation"


@dataclass(frozen=True)
class Match:
    key: str                    # iifname | oifname | ip daddr
    op: str                     # == | !=
    values: tuple[str, ...]     # an nft anonymous set (one value prints without braces)

    def text(self) -> str:
        vals = [f'"{v}"' if self.key.endswith("ifname") else v for v in self.values]
        right = vals[0] if len(vals) == 1 and "*" in self.values[0] else "{ " + ", ".join(vals) + " }"
        return f"{self.key} {'!= ' if self.op == '!=' else ''}{right}"

    def norm(self) -> tuple:
        return (self.key, self.op, frozenset(self.values))


@dataclass(frozen=True)
class Rule:
    matches: tuple[Match, ...]
    verdict: str                # drop | accept | anything nft printed that is not one of ours

    def text(self) -> str:
        return " ".join([*(m.text() for m in self.matches), self.verdict])

    def norm(self) -> tuple:
        return (tuple(m.norm() for m in self.matches), self.verdict)


@dataclass(frozen=True)
class Chain:
    name: str
    hook: str
    policy: str
    rules: tuple[Rule, ...]
    type: str = "filter"
    priority: int = 0


def chains(host: Host) -> tuple[Chain, ...] | None:
    """The isolation filter of `host`, or None for a host with no experimental interface."""
    exp = [i for i in host.interfaces if i.segment.startswith("experimental")]
    if not exp:
        return None
    ctl = [i for i in host.interfaces if not i.segment.startswith("experimental")]
    exp_ips = tuple(sorted(i.ip for i in exp if i.ip))
    rules = []
    passive = tuple(i.ifname for i in exp if i.mirror)
    if passive:
        rules.append(Rule((Match("iifname", "==", passive),), "drop"))
    active = tuple(i.ifname for i in exp if not i.mirror)
    if active:
        rules.append(Rule((Match("iifname", "==", active), Match("ip daddr", "!=", exp_ips)), "drop"))
    if ctl and exp_ips:
        rules.append(Rule((Match("iifname", "==", tuple(i.ifname for i in ctl)), Match("ip daddr", "==", exp_ips)),
                          "drop"))
    out = [Chain("input", "input", "accept", tuple(rules))]
    if host.forwarding:
        out.append(Chain("forward", "forward", "drop",
                         (Rule((Match("iifname", "==", ("exp*",)), Match("oifname", "==", ("exp*",))), "accept"),)))
    return tuple(out)


def ruleset(host: Host) -> str | None:
    """The nft text that installs `host`'s filter (None: the host needs none)."""
    model = chains(host)
    if model is None:
        return None
    lines = [f"table inet {TABLE} {{"]
    for c in model:
        lines += [f"  chain {c.name} {{", f"    type {c.type} hook {c.hook} priority {c.priority}; policy {c.policy};"]
        lines += [f"    {r.text()}" for r in c.rules]
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- reading back what a host has loaded


def loaded(doc: dict[str, Any]) -> tuple[Chain, ...]:
    """The chains of table inet wt_isolation from `nft -j list table inet wt_isolation` output, in our model.
    Anything that is not one of the filter's own statements is kept, as its JSON, so it still differs."""
    items = doc.get("nftables", []) if isinstance(doc, dict) else []
    heads: list[dict[str, Any]] = []
    rules: dict[str | None, list[Rule]] = {}      # by chain name
    for it in items:
        if "chain" in it:
            heads.append(it["chain"])
        elif "rule" in it:
            rules.setdefault(it["rule"].get("chain"), []).append(_rule(it["rule"].get("expr", [])))
    return tuple(Chain(c.get("name", "?"), c.get("hook", "(no hook)"), c.get("policy", "(none)"),
                       tuple(rules.get(c.get("name"), [])), c.get("type", "(no type)"), c.get("prio", 0))
                 for c in heads)


def _rule(exprs: list[dict[str, Any]]) -> Rule:
    import json

    matches, verdict = [], []
    for e in exprs:
        m = e.get("match") if isinstance(e, dict) else None
        left = m.get("left") if m else None
        key = None
        if isinstance(left, dict) and "meta" in left and left["meta"].get("key") in ("iifname", "oifname"):
            key = left["meta"]["key"]
        elif isinstance(left, dict) and left.get("payload") == {"protocol": "ip", "field": "daddr"}:
            key = "ip daddr"
        right = m.get("right") if m else None
        vals = right.get("set") if isinstance(right, dict) else [right]
        vals = vals if isinstance(vals, list) else []
        texts = tuple(v for v in vals if isinstance(v, str))
        if m and key and m.get("op") in ("==", "!=", "in") and texts and len(texts) == len(vals):
            matches.append(Match(key, "==" if m["op"] == "in" else m["op"], texts))
        elif isinstance(e, dict) and len(e) == 1 and next(iter(e.values())) is None:
            verdict.append(next(iter(e)))                       # {"drop": null}, {"accept": null}
        else:
            verdict.append(json.dumps(e, sort_keys=True))       # a statement the filter never has
    return Rule(tuple(matches), " ".join(verdict) or "(no verdict)")


def differences(expected: tuple[Chain, ...], have: tuple[Chain, ...]) -> list[str]:
    """What differs between the filter the lab installed and the one a host has loaded, in words; [] = same.
    Rules are compared in order, their sets as sets (nft prints them sorted, and one value without braces)."""
    out: list[str] = []
    mine = {c.name: c for c in have}
    for c in expected:
        h = mine.pop(c.name, None)
        if h is None:
            out.append(f"chain {c.name} is missing")
            continue
        for what, want, got in (("type", c.type, h.type), ("hook", c.hook, h.hook),
                                ("priority", c.priority, h.priority), ("policy", c.policy, h.policy)):
            if want != got:
                out.append(f"chain {c.name} {what} is {got} where the lab installed {want}")
        if [r.norm() for r in c.rules] != [r.norm() for r in h.rules]:
            want_n, got_n = [r.norm() for r in c.rules], [r.norm() for r in h.rules]
            missing = [r.text() for r in c.rules if r.norm() not in got_n]
            extra = [r.text() for r in h.rules if r.norm() not in want_n]
            parts = [f"missing '{t}'" for t in missing] + [f"extra '{t}'" for t in extra]
            if not parts:
                parts = ["its rules are in another order"]
            out.append(f"chain {c.name} has {len(h.rules)} rule(s) where the lab installed {len(c.rules)}: "
                       + "; ".join(parts))
    for name, h in mine.items():
        out.append(f"extra chain {name} (hook {h.hook}, policy {h.policy}, {len(h.rules)} rule(s))")
    return out
