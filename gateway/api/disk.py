"""The free-space floor: below it new envelopes and files are refused with 507.

Nothing already stored is ever dropped to make room; the floor only stops new
data from arriving, and ``/api/v1/status`` says so.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from pathlib import Path
from typing import Any

from gateway.api.errors import disk_full

REFRESH_S = 1.0


class DiskGuard:
    def __init__(self, path: Path, floor_bytes: int) -> None:
        self.path = Path(path)
        self.floor_bytes = floor_bytes
        self._free: int | None = None
        self._at = 0.0

    def _measure(self) -> int:
        self.path.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.path).free

    async def async_free_bytes(self) -> int:
        if self._free is None or time.monotonic() - self._at > REFRESH_S:
            self._free = await asyncio.get_running_loop().run_in_executor(None, self._measure)
            self._at = time.monotonic()
        return self._free

    async def async_is_low(self) -> bool:
        return await self.async_free_bytes() < self.floor_bytes

    async def async_check(self) -> None:
        """Raise the 507 refusal when free space is below the floor."""
        free = await self.async_free_bytes()
        if free < self.floor_bytes:
            raise disk_full(free, self.floor_bytes)

    async def async_snapshot(self) -> dict[str, Any]:
        free = await self.async_free_bytes()
        low = free < self.floor_bytes
        return {
            "free_bytes": free,
            "floor_bytes": self.floor_bytes,
            "low": low,
            "message": (
                "The disk is nearly full: new envelopes and files are refused; "
                "everything already saved is kept."
                if low
                else None
            ),
        }
