"""Named profiles: approximations of the *scanning behaviour only* of historical worms (rate, protocol, port,
target choice, batching). No exploit, no payload; every figure carries its source, and where a figure is our
own derivation or assumption the comment says so. An explicit option always overrides a profile's value.

Local-preference weights are (same /16, same /8, anywhere); "anywhere" means anywhere in the targets.
"""

from __future__ import annotations

from typing import Any

from .errors import UsageError

PROFILES: dict[str, dict[str, Any]] = {
    "nimda-like": {
        "protocol": "tcp",
        "port": 80,  # Nimda probed IIS on TCP/80 (CERT Advisory CA-2001-26).
        # ~200 connections/s: Twycross & Williamson 2003, §4.2.1 ("Nimda, which scans at a rate of around
        # 200 connections per second"), measured on their testbed.
        "rate": 200.0,
        "strategy": "local-preference",
        # 50 % same first two octets, 25 % same first octet, 25 % random: CERT Advisory CA-2001-26 (Nimda),
        # as also quoted on the SecurityFocus incidents list, 2003-07-29.
        "local_weights": (0.5, 0.25, 0.25),
    },
    "codered2-like": {
        "protocol": "tcp",
        "port": 80,  # IIS on TCP/80 (eEye, "CodeRedII Worm Analysis", Aug 2001).
        # Rate: OUR DERIVATION, not a published per-host figure. CERT/CC measured Code Red (100 scanning
        # threads) at "over 50,000 hosts/hour" ≈ 14/s in a vacuum (K. Houle, NANOG list, 2 Aug 2001);
        # CodeRedII runs 300 threads (eEye) → ≈ 3 × 14 ≈ 40/s.
        "rate": 40.0,
        "strategy": "local-preference",
        # 3/8 same /16, 1/2 same /8, 1/8 anywhere: eEye's CodeRedII analysis; Staniford, Paxson & Weaver,
        # "How to 0wn the Internet in Your Spare Time", USENIX Security 2002, §2.
        "local_weights": (0.375, 0.5, 0.125),
        "max_in_flight": 300,  # one connection per scanning thread, 300 threads (eEye).
    },
    "blaster-like": {
        "protocol": "tcp",
        "port": 135,  # DCOM RPC on TCP/135 (Microsoft MS03-026; Bailey et al., "The Blaster Worm: Then and
        # Now", IEEE Security & Privacy 3(4), 2005).
        # Sequential scan from a start address chosen 40 % local (own A.B.C-20) / 60 % random A.B.C.0,
        # in batches of 20 addresses: eEye "Blaster Worm Analysis" (AL20030811) and Bailey et al. 2005.
        "strategy": "sequential",
        "start": "blaster",
        "burst": 20,
        # Rate: APPROXIMATE. 20 connects per batch with a pause of ~1.8 s between batches, as the
        # disassembly is commonly summarised (eEye AL20030811) → 20 / 1.8 ≈ 11/s. Verify before citing.
        "rate": 11.0,
    },
    "slammer-like": {
        "protocol": "udp",
        "port": 1434,  # MS SQL Server Resolution Service, UDP/1434 (Moore et al., "Inside the Slammer Worm",
        # IEEE Security & Privacy 1(4), 2003).
        "udp_size": 376,  # the worm was a single 376-byte UDP payload (Moore et al. 2003); ours is padding.
        # Uniform random targets: Slammer used a (flawed) linear congruential generator over the whole IPv4
        # space (Moore et al. 2003); we keep uniform-without-repeats and do not copy the flaw.
        "strategy": "random",
        # Rate: bandwidth-limited, not latency-limited (Moore et al. 2003). 4,000/s is the order of the
        # per-host average that paper reports; a 100 Mb/s link bounds it at 100e6 / (8 × 404 B) ≈ 30,900
        # packets/s (our arithmetic: 376 + 8 UDP + 20 IP bytes). Verify the average before citing.
        "rate": 4000.0,
    },
}


def profile(name: str | None) -> dict[str, Any]:
    """The option values of a named profile ({} for None); UsageError naming the known ones otherwise."""
    if name is None:
        return {}
    try:
        return dict(PROFILES[name])
    except KeyError:
        raise UsageError(f"unknown profile {name!r} (choose one of {', '.join(sorted(PROFILES))})") from None
