"""The image tier: the real image, built and run on a private Docker engine (make image-test).

Session fixtures: one private engine (installed from Debian when missing, started under a
temporary directory), the stand-in Python base, the connector image built with BuildKit and
with the classic builder, and the TEST-ONLY Redis/Prometheus stand-ins; each is built once.
The whole tier is skipped, with the reason printed, when it cannot run (not root, Docker cannot
be installed or started). At the end the engine is closed and the host is compared with its
state before the run: a difference is an error. The figures collected meanwhile (sizes, times)
are printed in the terminal summary.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.support import DEPLOY, load_yaml
from tests.image import builds
from tests.image.figures import LINES, PARTS, figure, megabytes, part, timed
from tests.support.docker_engine import DockerEngine, EngineUnavailable, HostState, install

IMAGE_TAG = "connector:image-test"
CLASSIC_TAG = "connector:image-test-classic"
HERE = Path(__file__).resolve().parent
# test_image runs on the host-network daemon, test_compose on the namespaced one: in this order
# the daemon switches mode once.
MODULE_ORDER = ("test_image.py", "test_compose.py")
_durations: dict[str, float] = {}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    positions = [i for i, item in enumerate(items) if item.path.parent == HERE]
    ours = [items[i] for i in positions]

    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return MODULE_ORDER.index(name) if name in MODULE_ORDER else len(MODULE_ORDER)

    for position, item in zip(positions, sorted(ours, key=rank), strict=True):
        items[position] = item


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """The test bodies' time per module (the builds are fixtures: timed on their own)."""
    if report.nodeid.startswith("tests/image/") and report.when == "call":
        module = report.nodeid.split("::")[0].rsplit("/", 1)[-1]
        _durations[module] = _durations.get(module, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not LINES and not _durations:
        return
    for module, seconds in _durations.items():
        part(f"tests: {module}", seconds)
    terminalreporter.write_sep("=", "image tier: figures")
    for line in LINES:
        terminalreporter.write_line(line)
    # CI (.ci/run) lists every part's time at its end: the image tier's own parts go there too.
    if timings := os.environ.get("TIMINGS_FILE"):
        with open(timings, "a", encoding="utf-8") as out:
            for label, seconds in PARTS:
                out.write(f"{'  ' + label:<28} {seconds:8.1f} s\n")


def _skip(reason: str) -> None:
    figure("IMAGE TIER SKIPPED", reason)
    pytest.skip(f"image tier: {reason}")


@pytest.fixture(scope="session")
def engine() -> Iterator[DockerEngine]:
    """The private engine (host mode to begin with); afterwards the host is as it was."""
    if os.geteuid() != 0:
        _skip("needs root (it installs docker.io and runs a private dockerd)")
    try:
        started = time.monotonic()
        if install():
            part("install (apt-get)", time.monotonic() - started)
        else:
            figure("install", "docker.io, iptables, debootstrap already present")
    except EngineUnavailable as exc:
        _skip(f"Docker cannot be installed: {exc}")
    before = HostState.take()
    root = Path(tempfile.mkdtemp(prefix="connector-image-test-"))
    engine = DockerEngine(root)
    try:
        try:
            seconds = engine.use("host")
        except EngineUnavailable as exc:
            _skip(f"Docker cannot be started: {exc}")
        part("daemon start (host mode)", seconds or 0.0)
        yield engine
    finally:
        _close_and_compare(engine, before)


def _close_and_compare(engine: DockerEngine, before: HostState) -> None:
    with timed("cleanup: daemon stop"):
        if left := engine.remove_containers():
            figure("containers left behind by the tests (removed)", " ".join(left))
        engine.stop()
    with timed("cleanup: netns, files"):
        engine.close()
    problems = before.differences(HostState.take(), engine.root)
    if engine.root.exists():
        problems.append(f"{engine.root} still exists")
    figure(
        "cleanup check",
        "; ".join(problems)
        or "mounts, ip netns, host iptables, engine processes, host traces as before",
    )
    assert not problems, problems


@pytest.fixture
def host_engine(engine: DockerEngine) -> DockerEngine:
    """The engine in host mode: --network host containers share the host's loopback."""
    if (seconds := engine.use("host")) is not None:
        part("daemon restart (host)", seconds)
    return engine


@pytest.fixture(scope="session")
def base_image(engine: DockerEngine) -> str:
    engine.use("host")
    work = engine.root / "base"
    work.mkdir()
    with timed("base (debootstrap, import)"):
        builds.build_base(engine, work)
    size = int(engine.docker("image", "inspect", "-f", "{{.Size}}", builds.BASE_TAG).stdout)
    figure(f"stand-in base {builds.BASE_TAG}", megabytes(size))
    return builds.BASE_TAG


def _build(engine: DockerEngine, tag: str, base: str, *, buildkit: bool) -> str:
    engine.use("host")
    label = "BuildKit" if buildkit else "classic builder"
    with timed(f"build: {label}"):
        output = builds.build_connector(engine, tag, base, buildkit=buildkit)
    (engine.root / f"build-{'buildkit' if buildkit else 'classic'}.log").write_text(output)
    size = int(engine.docker("image", "inspect", "-f", "{{.Size}}", tag).stdout)
    figure(f"image size ({label} build)", megabytes(size))
    return tag


@pytest.fixture(scope="session")
def connector_image(engine: DockerEngine, base_image: str) -> str:
    """The image every run check uses: the documented build, BuildKit."""
    return _build(engine, IMAGE_TAG, base_image, buildkit=True)


@pytest.fixture(scope="session")
def classic_image(engine: DockerEngine, base_image: str) -> str:
    """The same Dockerfile through the classic builder (Debian 12's docker.io without buildx)."""
    return _build(engine, CLASSIC_TAG, base_image, buildkit=False)


@pytest.fixture(scope="session")
def standin_images(engine: DockerEngine, base_image: str) -> dict[str, str]:
    """service -> image name compose.yaml uses, built as the TEST-ONLY stand-ins."""
    services = load_yaml(DEPLOY / "compose.yaml")["services"]
    names = {service: services[service]["image"] for service in ("redis", "prometheus")}
    engine.use("host")
    with timed("build: stand-ins"):
        for service, name in names.items():
            builds.build_standin(engine, service, name, base_image)
    return names
