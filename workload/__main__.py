"""`python -m workload …` — see workload/cli.py."""

import sys

from .cli import main

sys.exit(main())
