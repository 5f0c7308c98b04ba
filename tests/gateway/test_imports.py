"""Each command imports what it uses: the gateway loads none of central's libraries,
and nothing for a feature that is off (memory on a Pi: docs/benchmarks.md, "Idle memory")."""

from __future__ import annotations

import subprocess
import sys

CENTRAL_ONLY = ("alembic", "psycopg", "jinja2", "aiohttp_jinja2", "pyxform")
GATEWAY_ONLY = ("zeroconf", "segno", "ifaddr")
# Loaded only when used: mDNS advertising or browsing, a QR code (segno; ifaddr for
# the addresses, which mDNS uses too), TLS certificates, PostgreSQL (central's
# sign-in lockout).
ON_USE = ("zeroconf", "segno", "ifaddr", "cryptography", "sqlalchemy.dialects.postgresql")


def _loaded(imports: str, names: tuple[str, ...]) -> list[str]:
    code = f"import sys\n{imports}\nprint(' '.join(m for m in {names!r} if m in sys.modules))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return done.stdout.split()


def test_the_gateway_imports_nothing_of_central() -> None:
    imports = "import gateway.app, gateway.cli, gateway.restore, provisioning.cli"
    assert _loaded(imports, CENTRAL_ONLY) == []


def test_the_gateway_loads_optional_features_only_when_used() -> None:
    assert _loaded("import gateway.app, gateway.cli", ON_USE) == []


def test_central_imports_nothing_of_the_gateway() -> None:
    assert _loaded("import cloud_bridge.service, cloud_bridge.cli", GATEWAY_ONLY) == []
