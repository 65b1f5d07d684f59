"""none: the control group — nothing installed, the wire must carry every attempt the worm made."""

from __future__ import annotations

from ..spec import Mechanism

NONE = Mechanism(
    name="none",
    summary="the control group: nothing is installed; the wire must carry every attempt the worm made",
    params=(), placements=("host", "gateway", "wire"), daemon=False, event_log=False, model=None, role=None,
    aliases=("baseline",),
)
