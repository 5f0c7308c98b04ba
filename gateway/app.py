"""Assembling the gateway: the aiohttp application, its background services, serving.

- ``create_app(config, store, backhaul=..., extra_cleanup_ctx=[...])`` builds
  the LAN API app on an open ``Store``.
- ``background_contexts(config, store, backhaul, replication)`` is THE list of background
  services (uplink, mDNS, scheduler, replication, systemd notify, …): each
  is an aiohttp ``cleanup_ctx`` async generator, started in order after the
  HTTP app is set up and stopped in reverse. Add new services there.
- ``running_gateway(config)`` opens the store, serves the app and yields a
  ``RunningGateway`` (tests, demo); ``run(config)`` serves until SIGTERM/SIGINT
  (the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from aiohttp import web

from gateway.api.disk import DiskGuard
from gateway.api.keys import (
    AUTH_KEY,
    BACKHAUL_KEY,
    BLOBS_KEY,
    CONFIG_KEY,
    DISK_KEY,
    METRICS_KEY,
    STARTED_KEY,
    STORE_KEY,
    UPLOAD_LOCKS_KEY,
)
from gateway.api.metrics import BackhaulCollector, Metrics
from gateway.api.middleware import MIDDLEWARES
from gateway.api.site import routes as site_routes
from gateway.api.views import routes
from gateway.auth import Auth
from gateway.backhaul import Backhaul, OfflineBackhaul
from gateway.config import GatewayConfig
from gateway.heartbeat import HeartbeatSource
from gateway.mdns_advertiser import async_announce, discovery_ctx
from gateway.qr import qr_svg_handler
from gateway.replication.metrics import ReplicationCollector
from gateway.replication.service import REPLICATOR_KEY, Replication
from gateway.scheduler import scheduler_ctx
from gateway.store import Store
from gateway.store.blobs import BlobFiles
from gateway.store.store import DB_FILENAME
from gateway.uplink import Uplink, uplink_ctx
from gateway.web import setup_web
from outpost.locks import KeyedLocks
from outpost.notify import (
    Notifier,
    async_start_watchdog,
    async_stop_watchdog,
)
from outpost.passwords import PasswordGate

logger = logging.getLogger(__name__)

CleanupCtx = (
    Callable[[web.Application], contextlib.AbstractAsyncContextManager[None]]
    | Callable[[web.Application], AsyncIterator[None]]
)


def store_for(config: GatewayConfig) -> Store:
    """A (not yet opened) store configured from ``[gateway]`` and ``[store]``."""
    return Store(
        config.gateway.data_dir / DB_FILENAME,
        synchronous=config.store.synchronous,
        queue_size=config.store.queue_size,
        max_batch=config.store.max_batch,
        busy_pause_s=config.store.busy_pause_ms / 1000,
    )


def background_contexts(
    config: GatewayConfig, store: Store, backhaul: Backhaul, replication: Replication
) -> list[CleanupCtx]:
    """The appliance's background services, in start order (stopped in reverse).

    The one place to add uplink, mDNS, scheduler, replication, sd_notify, …
    Each gets what it needs here, by argument.
    """
    # Replication first, so it stops last: the others' final writes reach the replica.
    contexts: list[CleanupCtx] = [replication.ctx]
    if isinstance(backhaul, Uplink):
        contexts.append(uplink_ctx(backhaul))
    contexts.append(scheduler_ctx(config, store, backhaul))
    if config.discovery.enabled:
        contexts.append(discovery_ctx(config))  # last, so its goodbye goes out first at stop
    return contexts


def default_backhaul(
    config: GatewayConfig, store: Store, replication: Replication | None = None
) -> Backhaul:
    """The MQTT uplink to central, or always-down when ``[mqtt] enabled = false``."""
    if not config.mqtt.enabled:
        return OfflineBackhaul()
    uplink = Uplink(config, store)
    uplink.heartbeat_source = HeartbeatSource(
        config.gateway.id,
        store,
        config.gateway.data_dir,
        replication=replication.status if replication is not None else None,
        cert_expiry=uplink.cert_expires_at,
        link=uplink.status,
    )
    return uplink


def create_app(
    config: GatewayConfig,
    store: Store,
    *,
    backhaul: Backhaul | None = None,
    extra_cleanup_ctx: Sequence[CleanupCtx] = (),
) -> web.Application:
    """The LAN API app on an open ``store``; ``backhaul`` defaults to always-down."""
    app = web.Application(client_max_size=config.lan.max_body_bytes, middlewares=MIDDLEWARES)
    app[CONFIG_KEY] = config
    app[STORE_KEY] = store
    backhaul = backhaul if backhaul is not None else OfflineBackhaul()
    app[BACKHAUL_KEY] = backhaul
    app[AUTH_KEY] = Auth(
        store,
        token_ttl_s=config.lan.token_ttl_s,
        max_failures=config.lan.signin_max_failures,
        lockout_s=config.lan.signin_lockout_s,
        slowdown_s=config.lan.signin_slowdown_s,
        gate=PasswordGate(
            max_concurrent=config.lan.signin_concurrency,
            max_waiting=config.lan.signin_queue,
            wait_s=config.lan.signin_wait_s,
        ),
    )
    app[METRICS_KEY] = Metrics()
    app[METRICS_KEY].registry.register(BackhaulCollector(app[BACKHAUL_KEY]))
    app[METRICS_KEY].registry.register(ReplicationCollector(lambda: app.get(REPLICATOR_KEY)))
    if isinstance(backhaul, Uplink):
        backhaul.on_users_replaced = app[AUTH_KEY].forget_cached  # cached sessions end too
    app[DISK_KEY] = DiskGuard(config.gateway.data_dir, config.lan.disk_free_floor_mb * 1024 * 1024)
    app[BLOBS_KEY] = BlobFiles(config.gateway.data_dir)
    app[UPLOAD_LOCKS_KEY] = KeyedLocks()
    app[STARTED_KEY] = time.monotonic()
    app.add_routes(routes)
    app.add_routes(site_routes)  # the site lead's view of the whole gateway
    app.router.add_get("/qr.svg", qr_svg_handler)  # the gateway's address as a QR code
    setup_web(app)  # the crews' web app at /
    app.cleanup_ctx.extend(extra_cleanup_ctx)
    app.on_cleanup.append(_close_gate)
    return app


async def _close_gate(app: web.Application) -> None:
    # Its threads finish the checks in hand; blocking, so off the loop.
    await asyncio.get_running_loop().run_in_executor(None, app[AUTH_KEY].gate.close)


@dataclass
class RunningGateway:
    config: GatewayConfig
    store: Store
    app: web.Application
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@contextlib.asynccontextmanager
async def running_gateway(
    config: GatewayConfig,
    *,
    backhaul: Backhaul | None = None,
    extra_cleanup_ctx: Sequence[CleanupCtx] | None = None,
    store: Store | None = None,
) -> AsyncIterator[RunningGateway]:
    """Open the store (unless given an open one), serve the app, clean up on exit.

    ``extra_cleanup_ctx`` defaults to ``background_contexts(...)``; pass ``[]``
    for the LAN API alone.
    """
    own_store = store is None
    store = store if store is not None else store_for(config)
    if own_store:
        await store.async_open()
    try:
        replication = Replication(config)
        backhaul = (
            backhaul if backhaul is not None else default_backhaul(config, store, replication)
        )
        contexts = (
            background_contexts(config, store, backhaul, replication)
            if extra_cleanup_ctx is None
            else list(extra_cleanup_ctx)
        )
        app = create_app(config, store, backhaul=backhaul, extra_cleanup_ctx=contexts)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, config.lan.host, config.lan.port, reuse_address=True)
            await site.start()
            host, port = runner.addresses[0][:2]
            logger.info("gateway %s listening on http://%s:%d", config.gateway.id, host, port)
            await async_announce(app, int(port))  # mDNS only once HTTP listens
            yield RunningGateway(config, store, app, runner, str(host), int(port))
        finally:
            await runner.cleanup()
    finally:
        if own_store:
            await store.async_close()


async def async_serve(config: GatewayConfig, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set (or SIGTERM/SIGINT)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # systemd (Type=notify): READY once the store is open and the API listens;
    # WATCHDOG pings while the loop turns and the store writer is healthy.
    notifier = Notifier.from_env()
    try:
        async with running_gateway(config) as gw:
            notifier.ready(f"gateway {config.gateway.id} serving on {gw.url}")
            watchdog = async_start_watchdog(notifier, gw.store.is_healthy)
            try:
                await stop.wait()
            finally:
                notifier.stopping(f"gateway {config.gateway.id} stopping")
                await async_stop_watchdog(watchdog)
            logger.info("stopping gateway %s", config.gateway.id)
    finally:
        notifier.close()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def run(config: GatewayConfig) -> None:
    """The appliance's main: serve the LAN API and background services until told to stop."""
    asyncio.run(async_serve(config))
