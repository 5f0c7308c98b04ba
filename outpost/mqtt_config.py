"""The ``[mqtt]`` config section, the same shape for the gateway and the bridge."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from outpost.config import Section


class MqttSection(Section):
    host: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)
    tls: bool = False
    ca: Path | None = None  # the fleet CA (PEM) that signed the broker's certificate
    cert: Path | None = None  # this client's certificate (PEM)
    key: Path | None = None  # this client's private key (PEM)
    keepalive: int = Field(default=30, ge=5, le=3600)
    client_id: str | None = None  # default: derived from the service identity
    username: str | None = None
    password: str | None = None
    connect_timeout: float = Field(default=10.0, gt=0, le=120)
    # Reconnect backoff: exponential with jitter, forever, capped low so a
    # site drains within seconds of the link returning.
    backoff_initial: float = Field(default=0.5, gt=0, le=60)
    backoff_max: float = Field(default=5.0, gt=0, le=300)

    @model_validator(mode="after")
    def _tls_files(self) -> MqttSection:
        if (self.cert is None) != (self.key is None):
            raise ValueError("cert and key must be given together")
        if self.cert is not None and not self.tls:
            raise ValueError("cert/key are given but tls = false")
        return self
