"""Every exception the test worm raises on purpose, each with the exit code its command returns.

The CLI prints `str(exc)` on one line and exits with `exc.exit_code`; nothing else reaches the user as a traceback.
"""

from __future__ import annotations


class WormError(Exception):
    """A failure we anticipated and can explain in one line."""

    exit_code = 1


class UsageError(WormError):
    """Bad input: an option, a CIDR, a rate, a key file, a profile or strategy name."""

    exit_code = 2


class InterlockError(WormError):
    """A safety interlock refused to let the worm run (or send a single packet)."""

    exit_code = 2


class ProtocolError(WormError):
    """A trigger or reply on the wire is malformed, oversized, unauthenticated, stale or replayed."""

    exit_code = 1

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
