"""Where a trial's own draw put the first infection (issue 16): the initial host's scan order is the worm's
seeded permutation (testworm.strategies), and its seed is the trial's, so the place of the first vulnerable
host in that order — and the scan-only time of the second infection, place / rate — is known exactly before
the trial runs. What the wire adds on top is the start-up: the scanner's Python starting, the handshake and
the trigger. A t_first outside the model's band with a late first place is the draw, not the model. Pure."""

from __future__ import annotations

from collections.abc import Iterable


def first_place(scan: str, seed: int, own: str, targets: Iterable[str]) -> int | None:
    """The 0-based place, in the scan order of the host at `own` with `seed`, of the first of `targets`
    (None: none is in the order). The order counts every address of the range, `own` included."""
    from testworm.addrs import AddressSet, ip_int
    from testworm.strategies import make_targets

    want = {ip_int(t) for t in targets} - {ip_int(own)}
    for k, addr in enumerate(make_targets("random", AddressSet.from_cidrs([scan]), seed=seed, own=ip_int(own))):
        if addr in want:
            return k
    return None


def draw_figures(scan: str, seed: int, own: str, targets: Iterable[str], rate: float,
                 t_first_s: float | None) -> dict[str, float | int | None]:
    """`first_place`, its scan-only time (`t_first_draw_s`) and what the trial took beyond it
    (`start_up_s`: the measured t_first minus the draw's)."""
    k = first_place(scan, seed, own, targets)
    draw = None if k is None else round(k / rate, 4)
    extra = None if draw is None or t_first_s is None else round(t_first_s - draw, 4)
    return {"first_place": k, "t_first_draw_s": draw, "start_up_s": extra}
