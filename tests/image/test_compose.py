"""deploy/compose.yaml brought up for real: the private engine in its own network namespace.

Compose needs user-defined networks and published ports, so the daemon is restarted (same data
root: the images stay) inside a network namespace of its own, with iptables enabled there only.
Redis and Prometheus are the TEST-ONLY stand-ins (tests/image/standins) under the names
compose.yaml uses; the connector, simulator and consumer are the image built by the tests.
Grafana's image cannot be had here: the other services are brought up by name.
What the stack publishes on 127.0.0.1 is inside that namespace: it is reached with nsenter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import DEPLOY, docker_compose, load_yaml, wait_for, yaml_module
from tests.image.figures import figure, part
from tests.support.docker_engine import DockerEngine

pytestmark = pytest.mark.timeout(900)

COMPOSE = DEPLOY / "compose.yaml"
# Everything but Grafana (no image to be had here, and no stand-in: see docs/deploy.md).
SERVICES = ("redis", "simulator", "connector", "consumer", "prometheus")
PROMETHEUS = "http://127.0.0.1:9090"
UP_WITHIN = 240.0
DATA_WITHIN = 90.0
BACKTEST_WITHIN = 240.0
FETCH = (
    "import sys, urllib.error, urllib.request\n"
    "try:\n"
    "    r = urllib.request.urlopen(sys.argv[1], timeout=5); status, body = r.status, r.read()\n"
    "except urllib.error.HTTPError as e:\n"
    "    status, body = e.code, e.read()\n"
    "except OSError:\n"
    "    status, body = 0, b''\n"
    "sys.stdout.write(f'{status}\\n' + body.decode())\n"
)


@dataclass
class Stack:
    engine: DockerEngine
    workdir: Path
    image: str
    files: list[Path] = field(default_factory=lambda: [COMPOSE])
    variables: dict[str, str] = field(default_factory=dict)
    label: str = ""

    def compose(
        self, *args: str, check: bool = True, timeout: float = 300
    ) -> subprocess.CompletedProcess[str]:
        argv = [docker_compose()]
        for path in self.files:
            argv += ["-f", str(path)]
        env = {**self.engine.env, "CONNECTOR_IMAGE": self.image, **self.variables}
        result = subprocess.run(
            [*argv, *args], env=env, cwd=DEPLOY, capture_output=True, text=True, timeout=timeout
        )
        if check:
            assert result.returncode == 0, f"docker-compose {' '.join(args)}:\n{result.stderr}"
        return result

    def container(self, service: str) -> str:
        found = self.compose("ps", "-a", "-q", service).stdout.split()
        assert len(found) == 1, (service, found)
        return found[0]

    def get(self, url: str) -> tuple[int, str]:
        """GET ``url`` from inside the daemon's network namespace (where ports are published)."""
        result = subprocess.run(
            self.engine.in_netns([sys.executable, "-c", FETCH, url]),
            capture_output=True,
            text=True,
            timeout=30,
        )
        status, _, body = result.stdout.partition("\n")
        return int(status or 0), body

    def down(self) -> tuple[int, float]:
        started = time.monotonic()
        result = self.compose("down", "--volumes", "--timeout", "30", check=False, timeout=180)
        return result.returncode, time.monotonic() - started

    def logs(self) -> str:
        return self.compose("logs", "--no-color", "--tail", "40", check=False).stdout


@pytest.fixture(scope="module")
def netns_engine(
    engine: DockerEngine, connector_image: str, standin_images: dict[str, str]
) -> DockerEngine:
    """The daemon restarted in its own network namespace, after every image was built."""
    if (seconds := engine.use("netns")) is not None:
        part("daemon restart (netns)", seconds)
    return engine


@pytest.fixture
def stack(netns_engine: DockerEngine, connector_image: str, tmp_path: Path) -> Iterator[Stack]:
    """The compose project; always taken down (with its volumes) at the end."""
    found = Stack(netns_engine, tmp_path, connector_image)
    try:
        yield found
    finally:
        if found.compose("ps", "-a", "-q", check=False).stdout.strip():
            print(found.logs())
            found.down()


def prometheus(stack: Stack, path: str, **query: str) -> Any | None:
    url = f"{PROMETHEUS}{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    status, body = stack.get(url)
    if status != 200:
        return None
    payload = json.loads(body)
    assert payload["status"] == "success", payload
    return payload["data"]


def test_stack_comes_up_prometheus_scrapes_and_down_is_clean(stack: Stack) -> None:
    started = time.monotonic()
    stack.compose(
        "up", "-d", "--no-build", "--pull", "never", "--wait", "--wait-timeout",
        str(int(UP_WITHIN)), *SERVICES, timeout=UP_WITHIN + 60,
    )  # fmt: skip
    part("compose: up --wait", time.monotonic() - started)
    figure("compose services brought up", f"{', '.join(SERVICES)} (Grafana left out)")
    states = {
        entry["Service"]: (entry["State"], entry.get("Health", ""))
        for entry in map(json.loads, stack.compose("ps", "--format", "json").stdout.splitlines())
    }
    assert states == {
        "redis": ("running", "healthy"),
        "simulator": ("running", "healthy"),
        "connector": ("running", "healthy"),
        "consumer": ("running", "healthy"),
        "prometheus": ("running", "healthy"),
    }

    def scraped() -> list[Any] | None:
        result = prometheus(stack, "/api/v1/query", query='connector_events_total{type="quote"}')
        return result["result"] if result and result["result"] else None

    samples = wait_for("a connector metric in Prometheus", scraped, DATA_WITHIN, interval=0.5)
    figure("Prometheus has connector metrics after compose up", _since(started))
    assert float(samples[0]["value"][1]) > 0, samples
    targets = prometheus(stack, "/api/v1/targets")
    assert targets is not None
    jobs = [(t["labels"]["job"], t["health"]) for t in targets["activeTargets"]]
    assert ("connector", "up") in jobs, jobs

    groups = load_yaml(DEPLOY / "prometheus" / "alerts.yaml")["groups"]
    rules = prometheus(stack, "/api/v1/rules")
    assert rules is not None
    loaded = {group["name"]: len(group["rules"]) for group in rules["groups"]}
    assert loaded == {group["name"]: len(group["rules"]) for group in groups}
    figure("alert rules loaded", f"{sum(loaded.values())} rules in {len(loaded)} groups")

    code, seconds = stack.down()
    part("compose: down", seconds, f"exit {code} in ")
    assert code == 0
    assert stack.compose("ps", "-a", "-q").stdout.strip() == ""
    networks = stack.engine.docker(
        "network", "ls", "-q", "--filter", "label=com.docker.compose.project=connector"
    )
    assert networks.stdout.strip() == ""


def _lingering_simulator(stack: Stack) -> Path:
    """An override that only adds --linger to the simulator's command: after a backtest the
    simulator exits (and its report with it); lingering keeps /report readable."""
    command = load_yaml(COMPOSE)["services"]["simulator"]["command"]
    override = stack.workdir / "compose.linger.yaml"
    document = {"services": {"simulator": {"command": [*command, "--linger", "600"]}}}
    override.write_text(yaml_module().safe_dump(document))
    return override


def run_backtest(stack: Stack) -> dict[str, Any]:
    """`SIM_MODE=backtest` (consumer-ack mode, group "strategy" confirmed by the example
    consumer) until the engine's outcome; the simulator's report."""
    stack.files.append(_lingering_simulator(stack))
    stack.variables["SIM_MODE"] = "backtest"
    started = time.monotonic()
    stack.compose("up", "-d", "--no-build", "--pull", "never", "redis", "simulator", "connector",
                  "consumer", timeout=UP_WITHIN)  # fmt: skip
    simulator = stack.container("simulator")

    def finished() -> dict[str, Any] | None:
        result = stack.engine.docker(
            "exec", simulator, "python", "-c", FETCH, "http://127.0.0.1:8080/report", check=False
        )
        status, _, body = result.stdout.partition("\n")
        if status != "200":
            return None
        report: dict[str, Any] = json.loads(body)
        return report if report["outcome"] is not None else None

    report = wait_for("the backtest's outcome", finished, BACKTEST_WITHIN, interval=0.5)
    counts = report["counts"]
    figure(
        f"compose backtest{' (' + stack.label + ')' if stack.label else ''}",
        f"{_since(started)} from up to outcome {report['outcome']}: {counts['steps']} steps, "
        f"{counts['acks']} acks, {counts['timeouts']} engine timeouts",
    )
    return report


def test_consumer_ack_backtest_completes_without_engine_timeouts(stack: Stack) -> None:
    started = time.monotonic()
    report = run_backtest(stack)
    part("compose: backtest", time.monotonic() - started)
    counts = report["counts"]
    assert report["outcome"] == "completed", (counts, stack.logs())
    assert counts["timeouts"] == 0, (counts, stack.logs())
    assert counts["steps_timed_out"] == 0
    assert counts["steps"] == 100
    assert counts["acked_ids"] > counts["steps"]  # every step's events, each acknowledged

    connector = stack.container("connector")
    state = wait_for(
        "the connector to exit after backtest_complete",
        lambda: _exited(stack.engine, connector),
        60,
    )
    assert state["ExitCode"] == 0, stack.logs()
    code, seconds = stack.down()
    part("compose: down (backtest)", seconds, f"exit {code} in ")
    assert code == 0


# The start order compose.yaml had before: the consumer waited for the connector's first
# health probe (10 s), the connector for nobody. `!override` replaces a list instead of merging.
OLD_START_ORDER = """\
services:
  connector:
    depends_on: !override
      redis: {condition: service_healthy}
      simulator: {condition: service_healthy}
  consumer:
    depends_on: !override
      redis: {condition: service_healthy}
      connector: {condition: service_healthy}
"""


def test_control_the_old_start_order_times_the_engine_out(stack: Stack) -> None:
    """Control: the test above can fail. With the consumer started after the connector's first
    health probe, the engine's first steps (5 s each) wait for it in vain."""
    old = stack.workdir / "compose.old-order.yaml"
    old.write_text(OLD_START_ORDER)
    stack.files.append(old)
    stack.label = "control: the old start order"
    report = run_backtest(stack)
    assert report["counts"]["timeouts"] > 0, report["counts"]
    assert stack.down()[0] == 0


def _exited(engine: DockerEngine, container: str) -> dict[str, Any] | None:
    state: dict[str, Any] = json.loads(
        engine.docker("inspect", "-f", "{{json .State}}", container).stdout
    )
    return None if state["Running"] else state


def _since(started: float) -> str:
    return f"{time.monotonic() - started:.1f} s"
