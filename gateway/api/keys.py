"""Typed application state (``AppKey``) of the gateway's aiohttp app."""

from __future__ import annotations

from aiohttp import web

from gateway.api.disk import DiskGuard
from gateway.api.metrics import Metrics
from gateway.auth import Auth, Principal
from gateway.backhaul import Backhaul
from gateway.config import GatewayConfig
from gateway.store import Store
from gateway.store.blobs import BlobFiles
from outpost.locks import KeyedLocks

CONFIG_KEY = web.AppKey("outpost_config", GatewayConfig)
STORE_KEY = web.AppKey("outpost_store", Store)
BACKHAUL_KEY = web.AppKey("outpost_backhaul", Backhaul)
AUTH_KEY = web.AppKey("outpost_auth", Auth)
METRICS_KEY = web.AppKey("outpost_metrics", Metrics)
DISK_KEY = web.AppKey("outpost_disk", DiskGuard)
BLOBS_KEY = web.AppKey("outpost_blobs", BlobFiles)
UPLOAD_LOCKS_KEY = web.AppKey("outpost_upload_locks", KeyedLocks)  # one upload per file
STARTED_KEY = web.AppKey("outpost_started", float)  # time.monotonic() at creation

PRINCIPAL = web.RequestKey("outpost_principal", Principal)  # set by the auth middleware


def principal(request: web.Request) -> Principal:
    """The signed-in user of an authenticated request."""
    return request[PRINCIPAL]
