"""The containment mechanisms the testbed can run, side by side (docs/mechanisms.md)."""
