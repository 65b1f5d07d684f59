"""Entry point: `python -m mechanisms.trw …` (see mechanisms/trw/cli.py)."""

import sys

from .cli import main

sys.exit(main())
