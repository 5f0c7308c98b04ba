"""Fixtures shared by every test package: a real broker, databases, cleanup checks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.broker import Broker
from tests.support.postgres import fresh_database


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest modules first, and in each module the browser tests last.

    The suite runs on pytest-xdist workers a module at a time (``--dist loadfile``),
    handed out in this order: long modules started first finish with the rest
    instead of after them. Within a module, tests that drive Chromium run after the
    others, because Playwright's sync API keeps an event loop running in the main
    thread while its browser is open, and pytest-asyncio cannot start one for an
    async test meanwhile (the browser closes with its module). Sorts are stable.
    """
    modules: dict[str, int] = {}
    weight: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::", 1)[0]
        modules.setdefault(module, len(modules))
        weight[module] = max(weight.get(module, 0), _weight(item))
    items.sort(
        key=lambda item: (
            -weight[item.nodeid.split("::", 1)[0]],
            modules[item.nodeid.split("::", 1)[0]],
            "chromium_browser" in getattr(item, "fixturenames", ()),
        )
    )


def _weight(item: pytest.Item) -> int:
    """How long a module runs, roughly: soak and fault runs, then the browser stories
    and the API fuzzing, then the rest."""
    if item.get_closest_marker("soak") is not None:
        return 2
    fixtures = getattr(item, "fixturenames", ())
    if "chromium_browser" in fixtures or "schemathesis" in item.nodeid:
        return 1
    return 0


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
