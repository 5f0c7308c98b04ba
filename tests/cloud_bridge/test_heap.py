"""The bridge's collector settings (``cloud_bridge.heap``), in a fresh interpreter:
freezing the test process's own heap would keep its garbage for good."""

from __future__ import annotations

import subprocess
import sys

from cloud_bridge import heap

PROBE = """
import gc, weakref
from cloud_bridge import heap

class Node:
    pass

alive = [[i] for i in range(1000)]  # made before: frozen, never walked again
heap.settle()
print(gc.get_freeze_count() >= 1000, gc.get_threshold()[0])
cycle = Node()
cycle.me = cycle  # garbage made after: still collected
gone = weakref.ref(cycle)
del cycle
gc.collect()
print(gone() is None)
"""


def test_settle_freezes_start_up_and_still_collects_later_garbage() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["True", str(heap.YOUNG_THRESHOLD), "True"]
