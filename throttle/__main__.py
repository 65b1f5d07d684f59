"""Entry point: `python -m throttle …` (see throttle/cli.py)."""

import sys

from .cli import main

sys.exit(main())
