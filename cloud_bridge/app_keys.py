"""The admin application's keys: what ``cloud_bridge.app.make_app`` puts on the app.

A leaf module (its types are imported for type checking only), so handlers in
any module read ``request.app[RUNNER_KEY]`` without importing the wiring in
``cloud_bridge/app.py``, which imports them all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from cloud_bridge.access import Route
    from cloud_bridge.blobs import BlobStore
    from cloud_bridge.config import FleetSection
    from cloud_bridge.dbrunner import DbRunner
    from cloud_bridge.metrics import BridgeMetrics
    from cloud_bridge.mqtt_bridge import MqttBridge

RUNNER_KEY: web.AppKey[DbRunner] = web.AppKey("runner")
MQTT_KEY: web.AppKey[MqttBridge] = web.AppKey("mqtt")
TOKEN_KEY: web.AppKey[str] = web.AppKey("token")
FLEET_KEY: web.AppKey[FleetSection] = web.AppKey("fleet")
METRICS_KEY: web.AppKey[BridgeMetrics] = web.AppKey("metrics")
BLOBS_KEY: web.AppKey[BlobStore] = web.AppKey("blobs")
MAX_BODY_KEY: web.AppKey[int] = web.AppKey("max_body")
# The API's route table (every module's), for the OpenAPI document.
API_ROUTES_KEY: web.AppKey[tuple[Route, ...]] = web.AppKey("api_routes")
