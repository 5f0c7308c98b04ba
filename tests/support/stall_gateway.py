"""``outpost-gateway`` with the test-only SIGUSR2 stall armed (see tests/support/stall.py).

Usage: ``python -m tests.support.stall_gateway run --config gateway.toml``.
"""

from __future__ import annotations

import sys

from gateway.cli import main
from tests.support.stall import arm

if __name__ == "__main__":
    arm()
    sys.exit(main())
