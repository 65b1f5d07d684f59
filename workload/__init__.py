"""The benign traffic generator (worm-testbed): servers that answer HTTP-like TCP and DNS-like UDP requests, and
client sessions that open connections to them on a seeded schedule or replay a trace, logging each connection
so the delay a containment mechanism adds can be measured against a capture. Standard library only, and under
the test worm's interlocks (lab ranges only, an allow-list for every target, never the root namespace).
See docs/workload.md.
"""

__version__ = "0.1.0"
