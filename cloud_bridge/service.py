"""The whole central side in one object: database, MQTT bridge, admin API.

For the CLI, the demo and tests::

    bridge = Bridge(config)
    await bridge.async_start()      # migrates, connects MQTT, listens for the admin API
    bridge.admin_url, bridge.admin_token
    await bridge.async_wait_mqtt(timeout=10)
    ...
    await bridge.async_stop()

or ``await run_bridge(config, stop_event)`` which serves until the event is set.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from cloud_bridge.app import load_or_create_token, make_app
from cloud_bridge.blobs import BlobStore
from cloud_bridge.config import BridgeConfig
from cloud_bridge.db import Database, mark_loop_thread, unmark_loop_thread
from cloud_bridge.dbrunner import DbRunner
from cloud_bridge.fleet import HistoryPrune
from cloud_bridge.groupcommit import GroupCommitter
from cloud_bridge.handler import BLOB_THREADS, UplinkHandler
from cloud_bridge.metrics import BridgeMetrics, async_watch_loop
from cloud_bridge.migration import migrate
from cloud_bridge.mqtt_bridge import MqttBridge, default_client_id
from cloud_bridge.passwords import PasswordWork
from cloud_bridge.replay import Replayer
from outpost.notify import Notifier, async_start_watchdog, async_stop_watchdog
from outpost.scheduling import new_scheduler, stoppable

if TYPE_CHECKING:
    from apscheduler.schedulers.asyncio import AsyncIOScheduler

logger = logging.getLogger(__name__)


class Bridge:
    def __init__(self, config: BridgeConfig, *, client_id: str | None = None) -> None:
        self.config = config
        self._client_id = client_id
        self.db: Database | None = None
        self.runner: DbRunner | None = None  # the admin API and pages
        self.uplink_runner: DbRunner | None = None  # heartbeats, state, check-outs
        self.handler: UplinkHandler | None = None
        self.committer: GroupCommitter | None = None
        self.blobs: BlobStore | None = None
        self.mqtt: MqttBridge | None = None
        self.admin_token = ""
        self.admin_url = ""
        self._site_runner: web.AppRunner | None = None
        self._scheduler: AsyncIOScheduler | None = None
        self.metrics = BridgeMetrics()
        self.passwords: PasswordWork | None = None
        self._loop_watch: asyncio.Task[None] | None = None

    async def async_start(self) -> None:
        cfg = self.config
        if cfg.replay.switch_interval_ms:
            # Replay threads run CPU-bound Python (form validation) holding the GIL; a
            # shorter switch interval lets the event loop (admin API, MQTT) in sooner.
            sys.setswitchinterval(cfg.replay.switch_interval_ms / 1000)
        # A connection for every DB thread: admin, uplink, replay, attachments (blob locks).
        connections = (cfg.admin.db_threads or 4) + 2 + (cfg.replay.threads or 2) + BLOB_THREADS
        self.db = await asyncio.to_thread(
            Database.from_url, cfg.central.database_url, pool_size=connections
        )
        try:
            revision = await asyncio.to_thread(migrate, self.db.engine)
            logger.info(
                "central database ready (%s, schema %s)", self.db.engine.url.drivername, revision
            )
            self.admin_token = await asyncio.to_thread(self._token)
            # Admin work has threads (and connections) of its own, so a saturated
            # uplink never queues it; replay has its own in the GroupCommitter.
            self.runner = DbRunner(self.db, cfg.admin.db_threads or None, name="central-admin")
            self.uplink_runner = DbRunner(self.db, 2, name="central-uplink")
            self.passwords = PasswordWork(cfg.platform.password_slots, cfg.platform.password_wait_s)
            self.blobs = BlobStore(cfg.central.data_dir, cfg.central.max_blob_bytes)
            mqtt = await self._async_start_uplink(self.uplink_runner, self.blobs)
            self._loop_watch = asyncio.create_task(
                async_watch_loop(self.metrics.loop_lag), name="bridge-loop-lag"
            )
            self._scheduler = self._start_scheduler(self.runner)
            await self._async_start_admin(self.runner, self.blobs)
        except BaseException:
            await self.async_stop()
            raise
        mark_loop_thread()
        logger.info(
            "admin API on %s; MQTT broker %s:%s as %s",
            self.admin_url,
            cfg.mqtt.host,
            cfg.mqtt.port,
            mqtt.client_id,
        )

    async def _async_start_uplink(self, uplink_runner: DbRunner, blobs: BlobStore) -> MqttBridge:
        """The gateways' side: group commit of replays, the handler, the MQTT connection."""
        cfg = self.config
        assert self.db is not None
        rp = cfg.replay
        self.committer = GroupCommitter(
            Replayer(self.db),
            threads=rp.threads or (1 if self.db.sqlite else 2),
            max_envelopes=rp.group_max_envelopes,
            wait_s=rp.group_wait_ms / 1000,
            queue_max_envelopes=rp.queue_max_envelopes,
            retry_after_s=rp.retry_after_s,
            metrics=self.metrics,
        )
        self.handler = UplinkHandler(
            uplink_runner,
            self.committer,
            self.metrics,
            blobs=blobs,
            history_every_s=cfg.fleet.history_every_s,
        )
        client_id = self._client_id
        if client_id is None and not cfg.mqtt.client_id:
            # Workers on one host must not share a client id (the broker would
            # disconnect one for the other): the admin port tells them apart.
            if not cfg.mqtt.uplink:
                client_id = default_client_id(f"-admin-{cfg.admin.port}")
            elif cfg.mqtt.shared:
                client_id = default_client_id(f"-{cfg.admin.port}")
        self.mqtt = mqtt = MqttBridge(cfg.mqtt, self.handler, client_id)
        await mqtt.async_start()
        return mqtt

    async def _async_start_admin(self, runner: DbRunner, blobs: BlobStore) -> None:
        """The admin port: its app, listening; ``admin_url`` says where."""
        cfg = self.config
        assert self.mqtt is not None
        app = make_app(
            runner,
            self.mqtt,
            self.admin_token,
            cfg.admin.max_body_bytes,
            fleet=cfg.fleet,
            metrics=self.metrics,
            blobs=blobs,
            platform=cfg.platform,
            passwords=self.passwords,
            trusted_proxies=cfg.admin.trusted_proxies,
        )
        self._site_runner = web.AppRunner(app, access_log=None)
        await self._site_runner.setup()
        site = web.TCPSite(self._site_runner, cfg.admin.host, cfg.admin.port)
        await site.start()
        port = cfg.admin.port
        for addr in self._site_runner.addresses:
            port = int(addr[1])
            break
        self.admin_url = f"http://{cfg.admin.host}:{port}"

    def _start_scheduler(self, runner: DbRunner) -> AsyncIOScheduler:
        """Periodic work, on the scheduler both services share: the fleet's history
        pruned now and every ``prune_interval_s``."""
        fleet = self.config.fleet
        scheduler = new_scheduler()
        scheduler.add_job(
            stoppable(HistoryPrune(runner.async_tx, fleet.history_days).async_run),
            "interval",
            seconds=fleet.prune_interval_s,
            id="fleet-history-prune",
            name="fleet history prune",
            next_run_time=datetime.now(UTC),
        )
        scheduler.start()
        return scheduler

    def _token(self) -> str:
        if self.config.admin.token:
            return self.config.admin.token
        token, path = load_or_create_token(Path(self.config.central.data_dir))
        logger.info("admin token is in %s", path)
        return token

    async def async_wait_mqtt(self, timeout: float = 10.0) -> None:
        assert self.mqtt is not None
        await self.mqtt.client.async_wait_connected(timeout)

    async def async_stop(self) -> None:
        unmark_loop_thread()
        if self._loop_watch is not None:
            self._loop_watch.cancel()
            self._loop_watch = None
        if self._site_runner is not None:
            await self._site_runner.cleanup()
            self._site_runner = None
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)  # cancels a running job
            self._scheduler = None
            await asyncio.sleep(0)  # let the cancellation land before the DB goes
        if self.mqtt is not None:
            await self.mqtt.async_stop()
            self.mqtt = None
        if self.handler is not None:
            await self.handler.heartbeats.async_stop()
            await asyncio.to_thread(self.handler.shutdown)
            self.handler = None
        if self.committer is not None:
            await asyncio.to_thread(self.committer.shutdown)
            self.committer = None
        if self.passwords is not None:
            await asyncio.to_thread(self.passwords.shutdown)
            self.passwords = None
        if self.uplink_runner is not None:
            await asyncio.to_thread(self.uplink_runner.shutdown)
            self.uplink_runner = None
        if self.runner is not None:
            await asyncio.to_thread(self.runner.shutdown)
            self.runner = None
        if self.db is not None:
            await asyncio.to_thread(self.db.dispose)
            self.db = None


async def run_bridge(
    config: BridgeConfig,
    stop: asyncio.Event | None = None,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Serve until ``stop`` is set (or the task is cancelled), then shut down cleanly.

    ``on_started`` runs once the bridge is up, before it reports ready.
    """
    bridge = Bridge(config)
    await bridge.async_start()
    if on_started is not None:
        on_started()
    # systemd (Type=notify): READY once the database is migrated and the admin
    # API listens; WATCHDOG pings while the event loop turns.
    notifier = Notifier.from_env()
    notifier.ready(f"bridge admin API on {bridge.admin_url}")
    watchdog = async_start_watchdog(notifier, lambda: True)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        logger.info("stopping")
        notifier.stopping("bridge stopping")
        await async_stop_watchdog(watchdog)
        await bridge.async_stop()
        notifier.close()
