"""Every command and subcommand answers ``--version`` (and exits 0)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

import outpost
from cloud_bridge.cli import main as bridge_main
from gateway.cli import main as gateway_main
from gateway.mdns_browser import main as discover_main
from gateway.qr import main as qr_main
from gateway.restore import main as restore_main
from provisioning.cli import main as provision_main

Main = Callable[[Sequence[str] | None], int]

CASES: list[tuple[str, Main, list[str]]] = [
    ("outpost-gateway", gateway_main, []),
    *[
        ("outpost-gateway", gateway_main, [sub])
        for sub in ("run", "check-config", "restore", "discover", "qr")
    ],
    ("outpost-bridge", bridge_main, []),
    ("outpost-bridge", bridge_main, ["run"]),
    ("outpost-bridge", bridge_main, ["check-config"]),
    ("outpost-provision", provision_main, []),
    *[
        ("outpost-provision", provision_main, [sub])
        for sub in (
            "init-ca",
            "add-gateway",
            "add-bridge",
            "renew",
            "broker-config",
            "revoke",
            "install",
            "list",
        )
    ],
    ("outpost-gateway", discover_main, []),
    ("outpost-gateway", qr_main, []),
    ("outpost-gateway", restore_main, []),
]


@pytest.mark.parametrize(("prog", "main", "args"), CASES)
def test_version(
    prog: str, main: Main, args: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as done:
        main([*args, "--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"{prog} {outpost.__version__}"
