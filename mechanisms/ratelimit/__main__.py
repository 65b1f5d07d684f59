"""Entry point: `python -m mechanisms.ratelimit …` (see mechanisms/ratelimit/cli.py)."""

import sys

from .cli import main

sys.exit(main())
