"""Fixtures for the central side: a migrated central database and seed data."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from cloud_bridge import rules
from cloud_bridge.db import Database
from cloud_bridge.migration import migrate
from cloud_bridge.replay import Replayer
from outpost.forms import ActivityTypeDef
from outpost.wire.schemas import WireEnvelope

FORM: dict[str, Any] = {
    "fields": [
        {"name": "site_ok", "type": "boolean", "required": True},
        {"name": "notes", "type": "text"},
        {"name": "weather", "type": "choice", "options": ["dry", "wet"]},
    ],
    "tables": [
        {
            "name": "readings",
            "fields": [
                {"name": "meter", "type": "text", "required": True},
                {"name": "value", "type": "number"},
            ],
        }
    ],
}


@pytest.fixture
def db(central_db_url: str) -> Iterator[Database]:
    database = Database.from_url(central_db_url)
    migrate(database.engine)
    yield database
    database.dispose()


@dataclass
class Seeded:
    db: Database

    def user(self, name: str = "ana", offline: bool = True) -> None:
        with self.db.session() as s:
            rules.put_user(s, name, "pw-" + name, offline)

    def activity_type(self, name: str = "inspection", offline: bool = True) -> None:
        with self.db.session() as s:
            rules.put_activity_type(
                s, ActivityTypeDef.model_validate({"name": name, "offline": offline, "form": FORM})
            )

    def activity(
        self,
        responsible: str = "ana",
        type_name: str = "inspection",
        approver: str | None = "ana",
        activity_id: str | None = None,
    ) -> str:
        with self.db.session() as s:
            a = rules.create_activity(s, "Fence check", type_name, responsible, activity_id)
            if approver is not None:
                rules.approve(s, a.id, approver)
            return a.id

    def ready(self, gateway: str | None = "site-a", activity_id: str | None = None) -> str:
        """A user, an offline type and an approved activity, checked out to ``gateway``."""
        with self.db.session() as s:
            if s.get(rules.User, "ana") is None:
                rules.put_user(s, "ana", "pw-ana", True)
            if s.get(rules.ActivityType, "inspection") is None:
                rules.put_activity_type(
                    s,
                    ActivityTypeDef.model_validate(
                        {"name": "inspection", "offline": True, "form": FORM}
                    ),
                )
        aid = self.activity(activity_id=activity_id)
        if gateway is not None:
            with self.db.session() as s:
                rules.check_out(s, aid, gateway)
        return aid


@pytest.fixture
def seed(db: Database) -> Seeded:
    return Seeded(db)


@pytest.fixture
def replayer(db: Database) -> Replayer:
    return Replayer(db)


def envelope(
    activity_id: str,
    seq: int,
    *,
    status: str = "draft",
    base_version: int = 1,
    author: str = "ana",
    record: dict[str, Any] | None = None,
    tables: dict[str, list[dict[str, Any]]] | None = None,
    envelope_id: uuid.UUID | None = None,
) -> WireEnvelope:
    now = datetime.now(UTC)
    return WireEnvelope(
        envelope_id=envelope_id or uuid.uuid4(),
        activity_id=activity_id,
        seq=seq,
        base_version=base_version,
        status=status,  # type: ignore[arg-type]
        created_at=now,
        received_at=now,
        author=author,
        form_version=1,
        record=record if record is not None else {"site_ok": True, "notes": f"seq {seq}"},
        tables=tables
        if tables is not None
        else {"readings": [{"meter": f"M{seq}-{i}", "value": float(i)} for i in range(3)]},
        attachments=[],
    )
