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


def test_a_mistyped_environment_variable_is_refused_naming_it() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(GatewayConfig, None, environ={"OUTPOST_MQTT_PROT": "1884"})
    msg = str(err.value)
    assert msg.startswith("environment: OUTPOST_MQTT_PROT: unknown key")
    assert "did you mean OUTPOST_MQTT_PORT?" in msg and "\n" not in msg


def test_variables_of_no_section_of_this_service_are_left_alone() -> None:
    # The bridge's admin port, a tool's log level: not the gateway's business.
    env = {"OUTPOST_ADMIN_PORT": "9000", "OUTPOST_LOG_LEVEL": "debug", "OUTPOST_SOAK_SCALE": "1"}
    assert load_config(GatewayConfig, None, environ=env).lan.port == 8080


def test_a_bad_environment_value_is_the_environments_error_not_the_files(
    tmp_path: Path,
) -> None:
    p = tmp_path / "gateway.toml"
    p.write_text("[lan]\nport = 8081\n")
    with pytest.raises(ConfigError) as err:
        load_config(GatewayConfig, p, environ={"OUTPOST_LAN_PORT": "abc"})
    msg = str(err.value)
    assert msg.startswith("environment: OUTPOST_LAN_PORT (lan.port): Input should be a valid")
    assert str(p) not in msg
    # A bad value in the file still names the file.
    p.write_text("[lan]\nport = 'abc'\n")
    with pytest.raises(ConfigError, match=rf"^{p}: lan\.port"):
        load_config(GatewayConfig, p, environ={"OUTPOST_MQTT_PORT": "1884"})
