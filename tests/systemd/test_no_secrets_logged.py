"""A gateway at debug level, with an MQTT password and S3 keys configured,
writes none of them to its log (the journal)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.broker import Broker

from .conftest import NotifyListener

PASSWORD = "pw-Zq81-never-in-logs"
S3_SECRET = "s3-Hk27-never-in-logs"
S3_KEY_ID = "AKIA-Ty55-never-in-logs"


def test_debug_log_has_no_secrets(
    tmp_path: Path, broker: Broker, notify_socket: NotifyListener
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"""
[gateway]
id = "site-secrets"
data_dir = "{tmp_path / "data"}"
[lan]
host = "127.0.0.1"
port = 0
[mqtt]
host = "{broker.host}"
port = {broker.port}
username = "site-secrets"
[discovery]
enabled = false
[replication]
enabled = true
s3_url = "s3://outpost-test/site-secrets"
s3_endpoint = "http://127.0.0.1:9"
"""
    )
    script = Path(sys.executable).with_name("outpost-gateway")
    cmd = [str(script)] if script.exists() else [sys.executable, "-m", "gateway"]
    env = {
        **os.environ,
        "NOTIFY_SOCKET": notify_socket.address,
        "OUTPOST_LOG_LEVEL": "debug",
        "OUTPOST_MQTT_PASSWORD": PASSWORD,
        # As systemd credentials, the way the unit passes S3 keys.
        "CREDENTIALS_DIRECTORY": str(tmp_path / "creds"),
    }
    (tmp_path / "creds").mkdir()
    (tmp_path / "creds/s3_access_key_id").write_text(S3_KEY_ID)
    (tmp_path / "creds/s3_secret_access_key").write_text(S3_SECRET)
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen(
            [*cmd, "run", "--config", str(config)], env=env, stderr=err, stdout=err
        )
    try:
        notify_socket.wait_for("READY", "1", timeout=60)
        deadline = time.monotonic() + 15  # until the uplink has connected and said so
        while "backhaul up" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-2000:]
            assert time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
    text = log.read_text()
    assert "DEBUG" in text  # the level really was debug
    for secret in (PASSWORD, S3_SECRET, S3_KEY_ID):
        assert secret not in text
