"""A fresh PostgreSQL database per test, or a visible skip where no server answers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    return os.environ.get("OUTPOST_TEST_POSTGRES_URL", DEFAULT_URL)


def _admin_connect(url: str):  # type: ignore[no-untyped-def]
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return psycopg.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 5432,
        user=u.username or "postgres",
        password=u.password,
        dbname=u.database or "postgres",
        autocommit=True,
        connect_timeout=3,
    )


@contextmanager
def fresh_database() -> Iterator[str]:
    """Create a uniquely named database; yield its SQLAlchemy URL; drop it after."""
    from sqlalchemy.engine import make_url

    url = server_url()
    try:
        admin = _admin_connect(url)
    except Exception as exc:
        pytest.skip(
            f"PostgreSQL not reachable at {url} ({exc.__class__.__name__}): skipping the PostgreSQL run"
        )
    name = f"outpost_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
