"""``python -m stabilize``: the same as the ``stabilize`` command."""

from __future__ import annotations

import sys

from stabilize.cli import main

if __name__ == "__main__":
    sys.exit(main())
