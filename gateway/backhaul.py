"""The seam between the LAN API and the link to central.

The API asks a ``Backhaul`` whether the link is up, for its status, and to
check an activity out (rule 2: that needs central). The real one is the
MQTT uplink; ``OfflineBackhaul`` (always down) is the default, so the LAN
API works alone and answers ``503 backhaul_down`` to check-outs.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from outpost.wire.schemas import CheckoutAnswer


@runtime_checkable
class Backhaul(Protocol):
    @property
    def is_up(self) -> bool:
        """True while the gateway can reach central right now."""
        ...

    def status(self) -> dict[str, Any]:
        """JSON-ready link state: ``link`` ("up"/"down"), ``since``, ``last_sync``, ``bytes_sent``…"""
        ...

    async def async_checkout(self, activity_id: str, username: str) -> CheckoutAnswer:
        """Ask central to check ``activity_id`` out to ``username`` at this gateway.

        Raises ``TimeoutError`` when central does not answer in time.
        """
        ...


class OfflineBackhaul:
    """No link to central (the default): check-outs are refused with 503."""

    def __init__(self, since: datetime | None = None) -> None:
        # Down since it was made (the gateway's start), unless told otherwise.
        self._since = since or datetime.now(UTC)

    @property
    def is_up(self) -> bool:
        return False

    def status(self) -> dict[str, Any]:
        return {
            "link": "down",
            "since": self._since.isoformat(),
            "last_sync": None,
            "bytes_sent": 0,
        }

    async def async_checkout(self, activity_id: str, username: str) -> CheckoutAnswer:
        raise ConnectionError("backhaul is down")
