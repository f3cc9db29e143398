"""``python -m sag``."""

import sys

from sag.cli import main

sys.exit(main())
