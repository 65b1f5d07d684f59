"""libvirt's LIBVIRT_* chains on a hypervisor (fake, no root): made once with the testbed's mark in /run, and
removed by whichever lab of ours goes down last — not only the one that made them (parallel instances)."""

from __future__ import annotations

from orchestrator.localrun import Result
from orchestrator.providers.libvirt import hypervisor as hvmod


class FakeHv:
    """iptables' chains and rules, and the files under /run, of a hypervisor."""

    def __init__(self):
        self.chains: dict[tuple[str, str, str], list[str]] = {}    # (tool, table, chain) → rules
        self.jumps: list[tuple[str, str, str, str]] = []           # (tool, table, parent, chain)
        self.files: set[str] = set()

    def run(self, argv, *, input=None, timeout=60.0):
        argv = list(argv)
        ok = lambda c=True: Result(tuple(argv), 0 if c else 1)   # noqa: E731
        if argv[0] == "test":
            return ok(argv[2] in self.files)
        if argv[0] == "sh":
            self.files.add(argv[2].split("> ")[1])
            return ok()
        if argv[0] == "rm":
            self.files.discard(argv[2])
            return ok()
        tool, table, op, chain = argv[0], argv[4], argv[5], argv[6]
        if op == "-N":
            self.chains[(tool, table, chain)] = []
            return ok()
        if op == "-I":
            self.jumps.append((tool, table, chain, argv[-1]))
            return ok()
        if op == "-S":
            rules = self.chains.get((tool, table, chain))
            return Result(tuple(argv), 0, f"-N {chain}\n" + "".join(r + "\n" for r in rules or [])) \
                if rules is not None else ok(False)
        if op == "-D":
            j = (tool, table, chain, argv[-1])
            if j in self.jumps:
                self.jumps.remove(j)
                return ok()
            return ok(False)
        if op == "-X":
            return ok(self.chains.pop((tool, table, chain), None) is not None)
        raise AssertionError(argv)


def test_chains_are_made_with_the_mark_and_removed_with_it_once_empty():
    hv = FakeHv()
    assert not hvmod.chains_present(hv) and not hvmod.chains_ours(hv)
    assert hvmod.ensure_chains(hv) is True
    assert hvmod.chains_present(hv) and hvmod.chains_ours(hv) and len(hv.chains) == len(hv.jumps) == 14
    assert hvmod.ensure_chains(hv) is False              # once: a second lab finds them and makes nothing
    # a lab's network still fills one chain: only the empty ones go, and the mark stays with the chain
    hv.chains[("iptables", "filter", "LIBVIRT_FWO")] = ["-A LIBVIRT_FWO -i wt-br0 -j REJECT"]
    removed = hvmod.remove_empty_chains(hv)
    assert "iptables:filter/LIBVIRT_FWO" not in removed and len(removed) == 13 and hvmod.chains_ours(hv)
    hv.chains[("iptables", "filter", "LIBVIRT_FWO")] = []
    assert hvmod.remove_empty_chains(hv) == ["iptables:filter/LIBVIRT_FWO"]
    assert hv.chains == {} and hv.jumps == [] and not hvmod.chains_ours(hv)


def test_chains_libvirt_made_are_not_marked_ours():
    hv = FakeHv()
    hv.chains[("iptables", "filter", "LIBVIRT_INP")] = []          # made by libvirt itself, not by us
    assert hvmod.chains_present(hv) and hvmod.ensure_chains(hv) is False and not hvmod.chains_ours(hv)
