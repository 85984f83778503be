"""Settings from the environment: defaults, validation messages, masking, secret files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from connector.config import ConfigError, load_settings, mask_url


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("CONNECTOR_"):
            monkeypatch.delenv(name)


def test_defaults_are_valid() -> None:
    settings = load_settings()
    assert settings.mode == "live"
    assert settings.stream_prefix == "md"
    assert settings.ack_mode == "immediate"


def test_environment_is_read_with_the_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_MODE", "Backtest")
    monkeypatch.setenv("CONNECTOR_PING_INTERVAL", "0.25")
    monkeypatch.setenv("CONNECTOR_ACK_MODE", "consumer")
    monkeypatch.setenv("CONNECTOR_CONSUMER_GROUPS", "risk, signals ,")
    settings = load_settings()
    assert settings.mode == "backtest"
    assert settings.ping_interval == 0.25
    assert settings.group_names == ("risk", "signals")


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("CONNECTOR_PING_INTERVAL", "abc", "CONNECTOR_PING_INTERVAL: expected a valid number"),
        ("CONNECTOR_PING_INTERVAL", "0", "CONNECTOR_PING_INTERVAL: expected greater than 0"),
        ("CONNECTOR_MODE", "paper", "CONNECTOR_MODE: expected 'backtest' or 'live'"),
        ("CONNECTOR_API_URL", "http://x", "CONNECTOR_API_URL: must be a ws:// or wss:// URL"),
        ("CONNECTOR_REDIS_URL", "mysql://x", "CONNECTOR_REDIS_URL: must be a redis://"),
        ("CONNECTOR_STREAM_PREFIX", "a{b}", "CONNECTOR_STREAM_PREFIX: must be 1-64 characters"),
        ("CONNECTOR_HTTP_PORT", "70000", "CONNECTOR_HTTP_PORT: expected less than or equal"),
        ("CONNECTOR_ACK_MODE", "consumer", "needs CONNECTOR_CONSUMER_GROUPS"),
        ("CONNECTOR_MAX_MISSED_PONGS", "0", "CONNECTOR_MAX_MISSED_PONGS: expected greater than"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_flags_are_named_as_flags() -> None:
    with pytest.raises(ConfigError, match="--ping-timeout: expected a valid number"):
        load_settings({"ping_timeout": "soon"})


def test_secrets_are_masked_when_described(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_API_KEY", "s3cr3t-key")
    monkeypatch.setenv("CONNECTOR_REDIS_URL", "redis://app:hunter22@redis:6379/0")
    settings = load_settings()
    shown = repr(settings) + str(settings.describe())
    assert "s3cr3t-key" not in shown
    assert "hunter22" not in shown
    assert "redis://app:***@redis:6379/0" in shown
    assert set(settings.secrets()) == {"s3cr3t-key", "hunter22"}


def test_secret_value_never_appears_in_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_REDIS_URL", "ftp://app:hunter22@redis")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "hunter22" not in str(info.value)


def test_api_key_file_is_read_and_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-file\n")
    monkeypatch.setenv("CONNECTOR_API_KEY_FILE", str(key_file))
    assert load_settings().resolved_api_key() == "from-file"
    monkeypatch.setenv("CONNECTOR_API_KEY_FILE", str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="CONNECTOR_API_KEY_FILE: cannot read"):
        load_settings()


def test_mask_url() -> None:
    assert mask_url("redis://localhost:6379/0") == "redis://localhost:6379/0"
    assert mask_url("rediss://:pw@h:1/2") == "rediss://***@h:1/2"


def test_api_url_credentials_and_tokens_are_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONNECTOR_API_URL", "wss://bot:pw-123456@gw:8080/v1/ws?token=tk-abcdef&v=2")
    settings = load_settings()
    shown = settings.describe()["api_url"]
    assert shown == "wss://bot:***@gw:8080/v1/ws?token=***&v=***"
    assert {"pw-123456", "tk-abcdef"} <= set(settings.secrets())


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: os.mkfifo(p), "is not a regular file"),  # opening it would block start-up
        (lambda p: p.mkdir(), "is not a regular file"),
        (lambda p: p.write_bytes(b"k" * 70_000), "70000 bytes; a secret file holds at most"),
        (lambda p: p.write_bytes(b"\xff\xfe"), "is not UTF-8 text"),
        (lambda p: p.write_text(" \n"), "is empty"),
    ],
)
def test_secret_files_must_be_small_regular_text_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make: Any, message: str
) -> None:
    path = tmp_path / "secret"
    make(path)
    monkeypatch.setenv("CONNECTOR_REDIS_PASSWORD_FILE", str(path))
    with pytest.raises(ConfigError, match=f"CONNECTOR_REDIS_PASSWORD_FILE: {path}.*{message}"):
        load_settings()


def test_an_unreadable_secret_file_says_which_user_must_read_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The container case: a 0600 root-owned file, read by the connector's own user. (Root
    reads anything, so the refusal is the operating system's answer, played here.)"""
    path = tmp_path / "key"
    path.write_text("sk-1")

    def refuse(self: Path, *args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    monkeypatch.setenv("CONNECTOR_API_KEY_FILE", str(path))
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value) == (
        f"CONNECTOR_API_KEY_FILE: cannot read {path}: permission denied; the connector runs as "
        f"UID {os.getuid()}: make the file readable by it (mode 0444, or owned by that user)"
    )
