"""The benign test worm (Twycross & Williamson 2003, §4.1.2): server, paced scanner, interlocks. Stdlib only.

It only "infects" hosts that already run its server, carries no exploit and no payload, and refuses to run
outside a lab. See docs/testworm.md.
"""

__version__ = "0.1.0"
