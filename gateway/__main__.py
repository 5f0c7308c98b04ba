"""``python -m gateway`` is ``outpost-gateway``."""

import sys

from gateway.cli import main

sys.exit(main())
