from pathlib import Path

import pytest

from cloud_bridge.config import BridgeConfig
from gateway.config import GatewayConfig
from outpost.config import ConfigError, load_config


def test_defaults_work_without_a_file() -> None:
    cfg = load_config(GatewayConfig, None, environ={})
    assert cfg.mqtt.port == 1883
    assert cfg.gateway.id == "site-a"


def test_file_then_environment_override(tmp_path: Path) -> None:
    p = tmp_path / "gateway.toml"
    p.write_text('[gateway]\nid = "site-b"\n[mqtt]\nport = 8883\n')
    cfg = load_config(GatewayConfig, p, environ={"OUTPOST_MQTT_PORT": "1884"})
    assert cfg.gateway.id == "site-b"
    assert cfg.mqtt.port == 1884


def test_list_values_from_environment_as_json() -> None:
    env = {"OUTPOST_DISCOVERY_INTERFACES": '["127.0.0.1", "eth0"]'}
    cfg = load_config(GatewayConfig, None, environ=env)
    assert cfg.discovery.interfaces == ["127.0.0.1", "eth0"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[mqtt]\nprot = 1\n", "mqtt.prot: unknown key"),
        ("[mqtt]\nport = 'x'\n", "mqtt.port: Input should be a valid integer"),
        ("[gateway]\nid = 'Site A/#'\n", "gateway.id:"),
        ("[nonsense]\n", "nonsense: unknown key"),
        ("[mqtt\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, expected: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(GatewayConfig, p, environ={})
    msg = str(err.value)
    assert expected in msg
    assert "\n" not in msg
    assert str(p) in msg


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(BridgeConfig, tmp_path / "nope.toml", environ={})


def test_bad_environment_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"admin\.port"):
        load_config(BridgeConfig, None, environ={"OUTPOST_ADMIN_PORT": "eighty"})
