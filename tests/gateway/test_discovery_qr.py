"""The gateway's address as a QR code: ``outpost-gateway qr`` and ``GET /qr.svg``.

The codes are read back with ``zbarimg`` (Debian ``zbar-tools``), a decoder no
one here wrote; skipped with the reason where it is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from aiohttp import ClientSession

from gateway.app import running_gateway
from gateway.config import GatewayConfig
from gateway.qr import gateway_url, lan_addresses, make_url, mdns_url, qr_png, qr_svg, qr_text

REPO = Path(__file__).resolve().parents[2]
SVG_NS = "{http://www.w3.org/2000/svg}"

needs_zbar = pytest.mark.skipif(
    shutil.which("zbarimg") is None,
    reason="zbarimg missing (apt-get install zbar-tools; scripts/ensure-system-deps.sh does)",
)


def zbar_decode(image: Path) -> str:
    out = subprocess.run(
        ["zbarimg", "--quiet", "--raw", str(image)],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    )
    return out.stdout.strip()


def terminal_qr_to_pbm(text: str, scale: int = 4) -> bytes:
    """Rebuild the image a terminal shows: a half-block cell is two modules
    (full block light over light, upper half light over dark, ...)."""
    halves = {"█": (0, 0), "▀": (0, 1), "▄": (1, 0), " ": (1, 1)}  # 1 = dark
    rows: list[list[int]] = []
    for line in text.rstrip("\n").split("\n"):
        top = [halves[c][0] for c in line]
        bottom = [halves[c][1] for c in line]
        rows += [top, bottom]
    width = max(len(r) for r in rows)
    rows = [r + [0] * (width - len(r)) for r in rows]
    big = [[px for px in row for _ in range(scale)] for row in rows for _ in range(scale)]
    header = f"P1\n{width * scale} {len(big)}\n".encode()
    return header + b"\n".join(" ".join(map(str, row)).encode() for row in big) + b"\n"


def test_urls() -> None:
    assert make_url("10.0.0.5", 8080) == "http://10.0.0.5:8080/"
    assert make_url("10.0.0.5", 80) == "http://10.0.0.5/"
    assert make_url("fd00::2", 8080) == "http://[fd00::2]:8080/"
    config = GatewayConfig.model_validate(
        {"gateway": {"id": "pit-3"}, "lan": {"host": "0.0.0.0", "port": 8081}}
    )
    assert mdns_url(config) == "http://outpost-pit-3.local:8081/"
    # wildcard host: the discovery interfaces' addresses (127.0.0.1 by default)
    assert lan_addresses(config) == ["127.0.0.1"]
    assert gateway_url(config) == "http://127.0.0.1:8081/"
    pinned = GatewayConfig.model_validate({"lan": {"host": "192.0.2.80", "port": 8081}})
    assert lan_addresses(pinned) == ["192.0.2.80"]


def test_svg_is_a_standalone_document_titled_with_the_url() -> None:
    svg = qr_svg("http://10.9.8.7:8080/")
    root = ET.fromstring(svg.split("?>", 1)[-1])
    assert root.tag == f"{SVG_NS}svg"
    assert root.findtext(f"{SVG_NS}title") == "http://10.9.8.7:8080/"
    assert int(root.attrib["width"]) >= 150  # big enough to scan from a screen


@needs_zbar
def test_png_and_terminal_codes_decode_to_the_url(tmp_path: Path) -> None:
    url = "http://10.9.8.7:8080/"
    png = tmp_path / "qr.png"
    png.write_bytes(qr_png(url))
    assert zbar_decode(png) == url
    pbm = tmp_path / "terminal.pbm"
    pbm.write_bytes(terminal_qr_to_pbm(qr_text(url)))
    assert zbar_decode(pbm) == url


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_qr_command_prints_both_urls_and_writes_files(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[gateway]\nid = "pit-3"\nsite = "Pit 3"\n[lan]\nhost = "192.0.2.80"\nport = 8080\n',
        encoding="utf-8",
    )
    done = run_cli(
        "qr",
        "--config",
        str(config),
        "--svg",
        str(tmp_path / "a.svg"),
        "--png",
        str(tmp_path / "a.png"),
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == [
        "Gateway pit-3 (Pit 3)",
        "Open http://192.0.2.80:8080/",
        "  or http://outpost-pit-3.local:8080/ on devices that resolve .local names",
    ]
    code = "\n".join(lines[3:]) + "\n"
    assert set(code) <= set("█▀▄ \n") and len(lines) > 15
    assert "<title>http://192.0.2.80:8080/</title>" in (tmp_path / "a.svg").read_text()
    assert (tmp_path / "a.png").read_bytes().startswith(b"\x89PNG")
    if shutil.which("zbarimg"):
        assert zbar_decode(tmp_path / "a.png") == "http://192.0.2.80:8080/"


def test_qr_command_bad_config_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[lan]\nport = 99999\n", encoding="utf-8")
    done = run_cli("qr", "--config", str(config))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "lan.port" in done.stderr
    assert "Traceback" not in done.stderr


async def test_status_page_qr_svg_names_the_address_the_viewer_used(tmp_path: Path) -> None:
    config = GatewayConfig.model_validate(
        {
            "gateway": {"id": "qr-gw", "data_dir": str(tmp_path / "data")},
            "lan": {"host": "127.0.0.1", "port": 0},
            "mqtt": {"enabled": False},
            "discovery": {"enabled": False},
        }
    )
    async with (
        running_gateway(config, extra_cleanup_ctx=[]) as gw,
        ClientSession() as http,
        http.get(f"{gw.url}/qr.svg") as resp,  # public: no sign-in needed
    ):
        assert resp.status == 200
        assert resp.content_type == "image/svg+xml"
        svg = await resp.text()
    root = ET.fromstring(svg.split("?>", 1)[-1])
    assert root.findtext(f"{SVG_NS}title") == f"http://127.0.0.1:{gw.port}/"
