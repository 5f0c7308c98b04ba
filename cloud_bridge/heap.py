"""The garbage collector set for a long-running central worker.

CPython's collector walks every tracked object it holds in a generation. In
a worker that is mostly objects made at start-up (modules, schemas, the
database's compiled statements) plus, while it drains a fleet's queue,
thousands of decoded batches alive at once, that walking cost 102-120 us of
CPU per envelope in a drain measured with ``bench/fleet_scale.py --queued``
(of 410-480 in all; a young collection every 700 allocations, and two full
ones in each drain of 4,000 envelopes), 28-35 us with these settings. So once
the worker is up: what it made so far is frozen (never walked again; it
lives as long as the process), and the young generation is collected every
:data:`YOUNG_THRESHOLD` allocations. Memory cost: garbage in reference cycles
waits a little longer (at most that many objects).

Only the ``outpost-bridge run`` process does this: a process that starts
many bridges (the test suite) would freeze each one's garbage for good.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # CPython's default is 700


def settle() -> None:
    """Freeze what exists now and collect the young generation less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
