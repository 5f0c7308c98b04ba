"""Tests start their own Mosquitto: see outpost.localbroker."""

from outpost.localbroker import Broker, free_port, wait_port

__all__ = ["Broker", "free_port", "wait_port"]
