"""Central's password checks: ``outpost.passwords.PasswordGate`` with central's limits.

(Hashing and the lockout themselves live only in ``outpost.passwords``.)

argon2 costs 64 MiB per hash; at most ``platform.password_slots`` run at
once, up to ``password_wait`` more wait ``password_wait_s`` for a turn, and
a check that cannot get one is answered 503 with ``Retry-After``
(``CentralError("busy")``) instead of queueing without end.
"""

from __future__ import annotations

from cloud_bridge.errors import CentralError
from outpost.passwords import PasswordGate, PasswordsBusy


def _busy(exc: PasswordsBusy) -> CentralError:
    return CentralError(
        "busy",
        "Central is checking many passwords right now; try again in a few seconds.",
        503,
        headers={"Retry-After": str(exc.retry_after_s)},
    )


class PasswordWork:
    def __init__(self, slots: int = 2, wait_s: float = 10.0, waiting: int = 38) -> None:
        self.slots = slots
        self._gate = PasswordGate(max_concurrent=slots, max_waiting=waiting, wait_s=wait_s)

    async def async_hash(self, password: str) -> str:
        try:
            return await self._gate.async_hash(password)
        except PasswordsBusy as exc:
            raise _busy(exc) from None

    async def async_verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return await self._gate.async_verify(password_hash, password)
        except PasswordsBusy as exc:
            raise _busy(exc) from None

    def shutdown(self) -> None:
        self._gate.close()
