"""The link laboratory: the real uplink and bridge across shaped links (issue 19).

Each test builds two network namespaces joined by a veth pair shaped to a
slow link (tbf for the rate, an NFQUEUE daemon for 300 ms each way; see
``tests/support/shaped_link.py``), runs a broker and a real ``outpost-bridge``
in one and the gateway's uplink in the other, and checks what a field site
on that link relies on. Sizes scale with ``OUTPOST_SOAK_SCALE`` (CI: 0.2).
Needs root; skipped with the reason otherwise. Traffic stays inside the
namespaces the test made, and they are deleted whatever happens.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.shaped_link import LabGateway, lab_peers, shaped_link, unavailable

pytestmark = [pytest.mark.soak, pytest.mark.timeout(900)]

SCALE = float(os.environ.get("OUTPOST_SOAK_SCALE", "1"))


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LabGateway]:
    why = unavailable()
    if why:
        pytest.skip(f"link laboratory skipped: {why}")
    rate_kbit = request.param
    with shaped_link(rate_kbit, delay_ms=300) as link, lab_peers(link, tmp_path) as gateway:
        yield gateway


@pytest.mark.parametrize("lab", [16], indirect=True)
def test_a_photo_crosses_16_kbit_without_a_reconnect_at_its_size(lab: LabGateway) -> None:
    size = int(300 * 1024 * max(SCALE, 0.2))
    result = lab.run({"photo": size})
    assert result["done"], result
    assert result["reconnects"] == 0, "the session dropped: something starved the keepalive"
    # Every byte on the veth, TCP/IP headers and the connection's own chatter included.
    assert result["wire_up"] <= 1.15 * size, result
    limit_s = result["wire_up"] * 8 / 16_000
    assert result["seconds"] <= limit_s * 1.25 + 5, result


@pytest.mark.parametrize("lab", [9.6], indirect=True)
def test_a_photo_still_crosses_9_6_kbit(lab: LabGateway) -> None:
    size = int(120 * 1024 * max(SCALE, 0.2))
    result = lab.run({"photo": size})
    assert result["done"], result
    assert result["reconnects"] == 0
    assert result["wire_up"] <= 1.2 * size, result


@pytest.mark.parametrize("lab", [64], indirect=True)
def test_an_envelope_goes_ahead_of_a_photo_at_64_kbit(lab: LabGateway) -> None:
    size = int(600 * 1024 * max(SCALE, 0.2))
    result = lab.run({"photo": size, "envelope_after_s": 8})
    assert result["done"] and result["envelope_done"], result
    assert result["reconnects"] == 0
    # Applied at most ~2 s later than on an idle link (which costs ~1 s:
    # a round trip, central's commit, the result's way back).
    assert result["envelope_seconds"] <= 3.5, result
    assert result["wire_up"] <= 1.15 * size + 4096, result
    idle = lab.run({"envelope": True})
    assert idle["done"], idle
    assert result["envelope_seconds"] <= idle["envelope_seconds"] + 2.5, (result, idle)
