"""Fixtures shared by every test package: a real broker, databases, cleanup checks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.postgres import fresh_database


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that drive the session's Chromium run last.

    Playwright's sync API keeps its event loop running in the main thread from
    the first browser test to the end of the session, and pytest-asyncio cannot
    start a loop for an async test while it runs ("Runner.run() cannot be
    called from a running event loop"). The sort is stable: order is otherwise kept.
    """
    items.sort(key=lambda item: "chromium_browser" in getattr(item, "fixturenames", ()))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A running Mosquitto on a free port with persistence; stopped after the test."""
    b = Broker(tmp_path / "broker").start()
    yield b
    b.stop()


@pytest.fixture
def broker_factory(tmp_path: Path) -> Iterator[type[Broker]]:
    """For tests that need their own broker config (TLS, ACLs, no persistence)."""
    made: list[Broker] = []

    class _Factory(Broker):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    yield _Factory
    for b in made:
        b.stop()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def central_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh central database: SQLite file, and a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'central.db'}"
    else:
        with fresh_database() as url:
            yield url


@pytest.fixture(autouse=True)
def verify_cleanup() -> Iterator[None]:
    """A test that leaves threads behind fails (paho loops, writer threads)."""
    before = set(threading.enumerate())
    yield
    leftover = [
        t
        for t in threading.enumerate()
        if t not in before
        and t.is_alive()
        and not t.daemon
        and not t.name.startswith(("asyncio_", "ThreadPoolExecutor"))
    ]
    for t in leftover:
        t.join(timeout=5)
    still = [t.name for t in leftover if t.is_alive()]
    assert not still, f"threads left running after the test: {still}"
