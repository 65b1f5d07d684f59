"""TRW's iptables rules: one chain of its own (`WTB-TRW`) that queues what the test needs to see — new
outgoing SYNs, and the answers: SYN-ACK, RST, ICMP destination unreachable — and jumps into it from the
hooks the placement passes through. Installed and removed atomically by `throttle.rules` (shared, with
TRW's own tag), so exactly one TRW set exists per network namespace.

host:    OUTPUT (`! -o lo`, or `-o IF`; conntrack's original direction) for the SYNs, INPUT (`! -i lo`, or
         `-i IF`; reply direction) for the answers — a SYN coming in is not this host scanning.
gateway: FORWARD for both directions; OUTPUT too, for the RSTs and ICMP errors the gateway itself sends
         (an nft `reject` in its forward hook answers from the gateway's own stack); the daemon tests only
         the SYNs it sees in FORWARD.

The answer rules always carry `--queue-bypass` (an answer is only ever accepted); `--fail-closed` removes
it from the SYN rule only.
"""

from __future__ import annotations

from dataclasses import dataclass

from throttle.rules import Tag

TAG = Tag("wtb-trw", "WTB-TRW", b"mechanisms.trw", "TRW")
MODES = ("host", "gateway")
HOOKS = {"host": ("OUTPUT", "INPUT"), "gateway": ("FORWARD", "OUTPUT")}


@dataclass(frozen=True)
class TrwRuleSpec:
    mode: str
    queue_num: int = 0
    interface: str | None = None
    fail_closed: bool = False
    pid: int = 0

    def lines(self) -> list[str]:
        """The rules as iptables-restore lines (filter table, without header/COMMIT)."""
        c = TAG.chain
        comment = f'-m comment --comment "{TAG.marker} pid={self.pid} q={self.queue_num} mode={self.mode}"'
        q = f"-j NFQUEUE --queue-num {self.queue_num}"
        syn = q + ("" if self.fail_closed else " --queue-bypass")
        ans = q + " --queue-bypass"
        out = [f":{c} - [0:0]",
               f"-A {c} -p tcp --syn -m conntrack --ctstate NEW {comment} {syn}",
               f"-A {c} -p tcp --tcp-flags SYN,ACK SYN,ACK {comment} {ans}",
               f"-A {c} -p tcp --tcp-flags RST RST {comment} {ans}",
               f"-A {c} -p icmp --icmp-type destination-unreachable {comment} {ans}"]
        if self.mode == "host":
            o = f"-o {self.interface}" if self.interface else "! -o lo"
            i = f"-i {self.interface}" if self.interface else "! -i lo"
            out += [f"-I OUTPUT 1 {o} -m conntrack --ctdir ORIGINAL {comment} -j {c}",
                    f"-I INPUT 1 {i} -m conntrack --ctdir REPLY {comment} -j {c}"]
        else:
            out += [f"-I FORWARD 1 {comment} -j {c}", f"-I OUTPUT 1 ! -o lo {comment} -j {c}"]
        return out
