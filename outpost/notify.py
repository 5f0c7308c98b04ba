"""Talking to systemd: sd_notify without a library, and a health-gated watchdog.

Under ``Type=notify`` systemd hands a service ``$NOTIFY_SOCKET`` (a datagram
socket; a leading ``@`` means an abstract one) and, with ``WatchdogSec=``,
``$WATCHDOG_USEC``. The service sends ``READY=1`` once it serves,
``WATCHDOG=1`` at least every ``WATCHDOG_USEC`` while it is healthy,
``STOPPING=1`` when it begins to shut down, and ``STATUS=…`` for
``systemctl status``. Outside systemd every call is a cheap no-op.

Wiring, for a service's entry point::

    notifier = Notifier.from_env()
    ...open the store, start listening...
    notifier.ready("serving on 0.0.0.0:8080")
    watchdog = async_start_watchdog(notifier, store.is_healthy)   # None outside systemd
    ...
    notifier.stopping()
    await async_stop_watchdog(watchdog)

The watchdog pings from a task on the event loop, so a blocked loop stops the
pings by itself; it also skips a ping when its own wake-up came late (the loop
was busy) or when the caller's health check (e.g. "the store writer committed
recently or is idle") says no. systemd then kills and restarts the service.

Child processes (litestream) must not be able to ping for us: start them with
:func:`child_environ`, which drops the notification variables.

(The tests stall a process's loop with ``tests/support/stall.py``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

logger = logging.getLogger(__name__)

NOTIFY_ENV_VARS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
_STATUS_MAX = 200  # systemctl status shows one line; keep datagrams small


def _address(socket_path: str) -> str | bytes:
    """The ``sendto`` address for ``$NOTIFY_SOCKET`` (``@name`` is abstract)."""
    if socket_path.startswith("@"):
        return b"\0" + socket_path[1:].encode()
    return socket_path


class Notifier:
    """Sends sd_notify datagrams to one socket; a no-op when there is none.

    Sending is one non-blocking ``sendto`` on a local datagram socket, so it is
    safe to call from the event loop. Failures are logged once and swallowed:
    a service must never die because its supervisor went away.
    """

    def __init__(self, socket_path: str | None) -> None:
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        self._warned = False
        if socket_path and (socket_path.startswith(("/", "@"))):
            self._address = _address(socket_path)
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        elif socket_path:
            logger.warning("ignoring NOTIFY_SOCKET %r: not a path or abstract name", socket_path)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        environ = os.environ if environ is None else environ
        return cls(environ.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines as one datagram; True if it was sent."""
        if self._sock is None or self._address is None:
            return False
        payload = "\n".join(assignments).encode()
        try:
            self._sock.sendto(payload, self._address)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                logger.warning("cannot notify the service manager: %s", exc)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *self._status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *self._status(status))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.send(*self._status(text))

    @staticmethod
    def _status(text: str | None) -> tuple[str, ...]:
        if text is None:
            return ()
        one_line = " ".join(text.split())[:_STATUS_MAX]
        return (f"STATUS={one_line}",)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """Seconds between pings (half of ``WATCHDOG_USEC``), or None if not asked.

    ``WATCHDOG_PID``, when set, names the process the watchdog is meant for; a
    process that inherited the variables from its parent must not ping.
    """
    environ = os.environ if environ is None else environ
    raw = environ.get("WATCHDOG_USEC")
    if not raw:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(raw)
    except ValueError:
        logger.warning("ignoring WATCHDOG_USEC %r: not a number", raw)
        return None
    if usec <= 0:
        return None
    return usec / 2_000_000


def child_environ(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A copy of the environment for a child process, without sd_notify's variables."""
    environ = os.environ if environ is None else environ
    return {k: v for k, v in environ.items() if k not in NOTIFY_ENV_VARS}


async def async_watchdog(
    notifier: Notifier,
    interval: float,
    is_healthy: Callable[[], bool],
    *,
    max_lag: float | None = None,
) -> None:
    """Ping ``WATCHDOG=1`` every ``interval`` seconds while healthy (runs forever).

    ``is_healthy`` runs on the loop, so it must not block (read a timestamp,
    don't query the database). A ping is skipped when the health check fails
    or raises, or when this task woke up more than ``max_lag`` seconds late
    (default: half the interval), because then the loop was not responsive.
    """
    max_lag = interval / 2 if max_lag is None else max_lag
    healthy = True
    next_at = time.monotonic() + interval
    notifier.watchdog()  # first ping at once: start-up may have taken a while
    while True:
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
        now = time.monotonic()
        lag = now - next_at
        next_at = now + interval
        reason = ""
        if lag > max_lag:
            reason = f"event loop was blocked for {lag:.1f} s"
        else:
            try:
                ok = is_healthy()
            except Exception:  # a broken health check means unhealthy, not a dead task
                logger.exception("watchdog health check failed")
                ok = False
            if not ok:
                reason = "health check failed"
        if reason:
            if healthy:
                logger.warning("watchdog: not pinging systemd: %s", reason)
                notifier.status(f"unhealthy: {reason}")
            healthy = False
            continue
        if not healthy:
            logger.info("watchdog: healthy again, pinging systemd")
            notifier.status("healthy")
        healthy = True
        notifier.watchdog()


def async_start_watchdog(
    notifier: Notifier,
    is_healthy: Callable[[], bool],
    environ: Mapping[str, str] | None = None,
) -> asyncio.Task[None] | None:
    """Start :func:`async_watchdog` if systemd asked for one; keep the returned task."""
    interval = watchdog_interval(environ)
    if interval is None or not notifier.enabled:
        return None
    logger.info("systemd watchdog: pinging every %.1f s while healthy", interval)
    return asyncio.get_running_loop().create_task(
        async_watchdog(notifier, interval, is_healthy), name="outpost-systemd-watchdog"
    )


async def async_stop_watchdog(task: asyncio.Task[None] | None) -> None:
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
