"""The connector image, built and run for real on a private Docker engine (make image-test).

Every container runs with ``--network host`` (the daemon has no bridge) and talks only to
loopback: a simulator (live mode) and a private redis-server, both started by the test on the
host. The production flags are used throughout: ``--read-only --cap-drop ALL --security-opt
no-new-privileges``. Waiting is always on a condition with a deadline; the one fixed delay is
the 0.1 s between ``docker run -d`` and ``docker stop``, which is the scenario itself.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from redis import Redis

from tests.deploy.support import http_get, process, tail, wait_for
from tests.image import builds
from tests.image.figures import figure
from tests.support.docker_engine import DockerEngine
from tests.support.redis_server import RedisServer, free_port

pytestmark = pytest.mark.timeout(900)  # the first test also builds the base and the image

HARDENED = ("--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges")
SYMBOLS = ("AAPL", "MSFT")
PREFIX = "md"
LEASE = f"{PREFIX}:lease"
STARTUP = 60.0
# The image's HEALTHCHECK: first probe after 10 s, start period 15 s, 3 retries 10 s apart.
HEALTHY_WITHIN = 75.0
UNREADABLE_KEY_MESSAGE = (
    "permission denied; the connector runs as UID 10001: make the file readable by it "
    "(mode 0444, or owned by that user)"
)


# -- containers -----------------------------------------------------------------------------------


@dataclass
class Container:
    engine: DockerEngine
    id: str
    started: float  # monotonic time `docker run -d` returned

    def inspect(self, template: str) -> str:
        return self.engine.docker("inspect", "-f", template, self.id).stdout.strip()

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.inspect("{{json .State}}"))
        return state

    def logs(self) -> str:
        result = self.engine.docker("logs", self.id, check=False)
        return result.stdout + result.stderr

    def python(self, code: str) -> Any:
        """Run ``code`` with the image's Python in the running container; its JSON output."""
        result = self.engine.docker("exec", self.id, "python", "-c", code)
        return json.loads(result.stdout)

    def stop(self, grace: int = 10) -> tuple[int, float]:
        """``docker stop`` with ``grace`` seconds: the container's exit code, the seconds taken."""
        started = time.monotonic()
        self.engine.docker("stop", "-t", str(grace), self.id, timeout=grace + 60)
        seconds = time.monotonic() - started
        return int(self.inspect("{{.State.ExitCode}}")), seconds


@contextmanager
def container(engine: DockerEngine, *run_args: str) -> Iterator[Container]:
    """``docker run -d RUN_ARGS``; removed (forcibly) at the end whatever happened."""
    result = engine.docker("run", "-d", *run_args)
    found = Container(engine, result.stdout.strip(), time.monotonic())
    try:
        yield found
    finally:
        engine.docker("rm", "-f", found.id, check=False)


def connector_args(simulator_port: int, redis: RedisServer, http_port: int) -> list[str]:
    settings = {
        "CONNECTOR_API_URL": f"ws://127.0.0.1:{simulator_port}/v1/ws",
        "CONNECTOR_MODE": "live",
        "CONNECTOR_REDIS_URL": redis.url,
        "CONNECTOR_STREAM_PREFIX": PREFIX,
        # Loopback only: with --network host 0.0.0.0 would be the host's interfaces.
        "CONNECTOR_HTTP_HOST": "127.0.0.1",
        "CONNECTOR_HTTP_PORT": str(http_port),
        "CONNECTOR_LOG_FORMAT": "json",
    }
    return [arg for key, value in settings.items() for arg in ("-e", f"{key}={value}")]


def wait_healthy(box: Container) -> dict[str, Any]:
    """The container's health once it is decided: healthy, unhealthy, or a probe failed (in the
    start period a failure leaves the status "starting"; here every probe should pass)."""

    def settled() -> dict[str, Any] | None:
        health: dict[str, Any] = box.state().get("Health") or {}
        failed = any(probe["ExitCode"] != 0 for probe in health.get("Log") or [])
        return health if failed or health.get("Status") in ("healthy", "unhealthy") else None

    return wait_for("the image's HEALTHCHECK to decide", settled, HEALTHY_WITHIN, interval=0.25)


def redis_client(server: RedisServer) -> Redis:
    return Redis.from_url(server.url, decode_responses=True)


# -- what the tests run against -------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """``connector simulate --mode live`` on the host's loopback; yields its port."""
    port = free_port()
    argv = [
        sys.executable, "-m", "connector", "simulate", "--mode", "live", "--host", "127.0.0.1",
        "--port", str(port), "--symbols", ",".join(SYMBOLS), "--rate", "20",
    ]  # fmt: skip
    log = tmp_path_factory.mktemp("simulator") / "simulator.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_")}
    with process(argv, log, env=env) as proc:

        def up() -> bool | None:
            assert proc.poll() is None, f"the simulator exited:\n{tail(log)}"
            return True if http_get(f"http://127.0.0.1:{port}/report")[0] == 200 else None

        wait_for("the host simulator", up, STARTUP)
        yield port


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Running:
    box: Container
    http_port: int
    redis: RedisServer

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"


@pytest.fixture(scope="module")
def running(
    engine: DockerEngine, connector_image: str, live_simulator: int, module_redis: RedisServer
) -> Iterator[Running]:
    """One hardened `connector run` container, shared by the checks below (the last one stops
    it)."""
    engine.use("host")
    port = free_port()
    args = connector_args(live_simulator, module_redis, port)
    with container(engine, "--network", "host", *HARDENED, *args, connector_image) as box:
        running = Running(box, port, module_redis)

        def healthz() -> bool | None:
            state = box.state()
            assert state["Running"], f"the container stopped:\n{box.logs()}"
            return True if http_get(running.url("/healthz"))[0] == 200 else None

        wait_for("/healthz", healthz, STARTUP, interval=0.05)
        figure("/healthz answers 200 after docker run", f"{time.monotonic() - box.started:.2f} s")
        yield running


# -- the image as built ---------------------------------------------------------------------------

CONTENTS = r"""
import importlib.util, json, os, re
path_dirs = os.environ["PATH"].split(":") + ["/bin", "/sbin", "/usr/bin", "/usr/sbin",
                                             "/usr/local/bin", "/usr/local/sbin"]
# pip, pip3, pip3.11; gcc, cc, c++, g++, clang, also as x86_64-linux-gnu-gcc-12 and the like
wanted = re.compile(r"pip.*|(.+-)?(gcc|cc|c\+\+|g\+\+|clang|tcc)(-[0-9.]+)?")
executables = sorted({
    os.path.join(d, name) for d in path_dirs if os.path.isdir(d) for name in os.listdir(d)
    if wanted.fullmatch(name) and os.access(os.path.join(d, name), os.X_OK)})
wheels, bench, cc1 = [], [], []
for top, dirs, files in os.walk("/"):
    if top in ("/proc", "/sys", "/dev"):
        dirs[:] = []
        continue
    wheels += [os.path.join(top, f) for f in files if f.endswith(".whl")]
    cc1 += [os.path.join(top, f) for f in files if f in ("cc1", "cc1plus")]
    for d in dirs:
        lower = d.lower()
        if lower.startswith(("connector_bench", "connector-bench")) or (
            d == "bench" and os.path.exists(os.path.join(top, d, "__init__.py"))):
            bench.append(os.path.join(top, d))
print(json.dumps({
    "pip_module": importlib.util.find_spec("pip") is not None,
    "bench_module": importlib.util.find_spec("connector_bench") is not None,
    "executables": executables, "wheels": wheels, "bench": bench, "cc1": cc1,
}))
"""


def contents(engine: DockerEngine, image: str) -> dict[str, Any]:
    """What ``image`` holds, seen from inside it (no network, read-only root)."""
    result = engine.docker(
        "run", "--rm", "--network", "none", "--read-only", "--entrypoint", "python", image,
        "-c", CONTENTS,
    )  # fmt: skip
    found: dict[str, Any] = json.loads(result.stdout)
    return found


@pytest.fixture(params=["buildkit", "classic"])
def built(request: pytest.FixtureRequest) -> str:
    """Each build of the Dockerfile: BuildKit and the classic builder must both succeed."""
    fixture = "connector_image" if request.param == "buildkit" else "classic_image"
    image: str = request.getfixturevalue(fixture)
    return image


def test_image_has_no_pip_compiler_or_benchmark(host_engine: DockerEngine, built: str) -> None:
    found = contents(host_engine, built)
    assert found == {
        "pip_module": False, "bench_module": False, "executables": [], "wheels": [],
        "bench": [], "cc1": [],
    }  # fmt: skip
    pip = host_engine.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", built, "-m", "pip",
        "--version", check=False,
    )  # fmt: skip
    assert pip.returncode != 0
    assert "No module named pip" in pip.stderr
    version = host_engine.docker("run", "--rm", "--network", "none", built, "--version")
    assert version.stdout.strip().endswith("1.0.0"), version.stdout


def test_contents_check_sees_pip_in_the_base(host_engine: DockerEngine, base_image: str) -> None:
    """Control: the same check on the stand-in base (pip, its wheels) reports them."""
    found = contents(host_engine, base_image)
    assert found["pip_module"] is True
    assert any(path.rsplit("/", 1)[-1].startswith("pip") for path in found["executables"])
    assert any("/pip-" in path for path in found["wheels"]), found["wheels"]


def test_base_name_label_is_the_python_image_passed(host_engine: DockerEngine, built: str) -> None:
    label = host_engine.docker(
        "image", "inspect", "-f",
        '{{ index .Config.Labels "org.opencontainers.image.base.name" }}', built,
    ).stdout.strip()  # fmt: skip
    assert label == builds.BASE_TAG


def test_dependencies_follow_the_lock_markers_of_python_3_11_2(
    host_engine: DockerEngine, connector_image: str
) -> None:
    """Debian's python3 is 3.11.2: the lock's `python_full_version < '3.11.3'` entries
    (redis' async-timeout) apply and were installed; the build checked every hash."""
    code = (
        "import importlib.metadata as m, json, sys; print(json.dumps({'python': "
        "'.'.join(map(str, sys.version_info[:3])), 'async_timeout': "
        "m.version('async-timeout'), 'connector': m.version('connector')}))"
    )
    result = host_engine.docker(
        "run", "--rm", "--network", "none", "--entrypoint", "python", connector_image, "-c", code
    )
    found = json.loads(result.stdout)
    assert found["python"] == "3.11.2"
    assert found["connector"] == "1.0.0"
    lock = (builds.ROOT / "requirements" / "runtime.txt").read_text()
    assert f"async-timeout=={found['async_timeout']}" in lock
    assert "python_full_version < '3.11.3'" in lock


# -- the running service --------------------------------------------------------------------------

PROCESSES = r"""
import json, os
found = {}
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        status = dict(line.split(":\t", 1) for line in
                      open(f"/proc/{pid}/status").read().splitlines() if ":\t" in line)
        cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        continue
    if int(pid) == os.getpid():
        continue
    found[pid] = {"cmdline": [part.decode() for part in cmdline if part],
                  **{key: status[key].strip() for key in
                     ("Uid", "Gid", "CapEff", "CapPrm", "CapBnd", "NoNewPrivs")}}
try:
    open("/opt/venv/written-at-run-time", "w")
    write = "written"
except OSError as exc:
    write = exc.strerror
print(json.dumps({"processes": found, "write": write}))
"""


def test_runs_read_only_as_uid_10001_without_capabilities(running: Running) -> None:
    seen = running.box.python(PROCESSES)
    processes = seen["processes"]
    tini = processes["1"]
    assert os.path.basename(tini["cmdline"][0]) == "tini", tini
    (service,) = [p for p in processes.values() if p["cmdline"][-1:] == ["run"] and p is not tini]
    assert any(part.endswith("/connector") for part in service["cmdline"]), service
    for proc in (tini, service):
        assert proc["Uid"].split() == ["10001"] * 4, proc
        assert proc["Gid"].split() == ["10001"] * 4, proc
        for capabilities in ("CapEff", "CapPrm", "CapBnd"):
            assert int(proc[capabilities], 16) == 0, (capabilities, proc)
        assert proc["NoNewPrivs"] == "1", proc
    assert seen["write"] == "Read-only file system"
    assert running.box.inspect("{{.HostConfig.ReadonlyRootfs}}") == "true"


def test_ops_endpoints_answer(running: Running) -> None:
    assert http_get(running.url("/healthz"))[0] == 200
    wait_for("/readyz 200", lambda: True if http_get(running.url("/readyz"))[0] == 200 else None,
             STARTUP)  # fmt: skip
    status, body = http_get(running.url("/metrics"))
    assert status == 200
    text = body.decode()
    assert "connector_info{" in text
    assert "connector_connected 1.0" in text


def test_candles_and_quotes_from_the_host_simulator_land_in_host_redis(running: Running) -> None:
    keys = [f"{PREFIX}:{{{s}}}:{kind}" for s in SYMBOLS for kind in ("quote", "candle:1m")]
    with redis_client(running.redis) as client:

        def stored() -> dict[str, int] | None:
            lengths = {key: int(client.xlen(key)) for key in keys}
            return lengths if all(lengths.values()) else None

        lengths = wait_for("candles and quotes of every symbol in Redis", stored, STARTUP)
        entry = client.xrevrange(f"{PREFIX}:{{AAPL}}:quote", count=1)[0][1]
    assert lengths
    assert entry["symbol"] == "AAPL", entry


def test_image_healthcheck_reports_healthy(running: Running) -> None:
    health = wait_healthy(running.box)
    assert health["Status"] == "healthy", health["Log"]
    figure(
        "HEALTHCHECK healthy after docker run (first probe at the 10 s interval)",
        f"{time.monotonic() - running.box.started:.1f} s",
    )
    assert all(probe["ExitCode"] == 0 for probe in health["Log"]), health["Log"]


def test_docker_stop_exits_0_and_releases_the_lease(running: Running) -> None:
    """Last of the checks on the shared container: it stops it."""
    with redis_client(running.redis) as client:
        wait_for("the stream-prefix lease", lambda: client.exists(LEASE) or None, STARTUP)
        code, seconds = running.box.stop()
        assert code == 0, running.box.logs()
        assert client.exists(LEASE) == 0
    figure("docker stop of a running connector", f"exit {code} in {seconds:.2f} s")
    stopped = [json.loads(line) for line in running.box.logs().splitlines() if line[:1] == "{"]
    assert [entry for entry in stopped if entry.get("msg") == "stopped"], stopped[-5:]


@pytest.mark.parametrize("delay", [0.1, 0.6])
def test_stop_right_after_start_exits_0_and_leaves_no_lease(
    host_engine: DockerEngine,
    connector_image: str,
    live_simulator: int,
    redis_server: RedisServer,
    delay: float,
) -> None:
    """A stop while the connector is still starting (tini is PID 1 and forwards it; the
    connector records it and stops cleanly): exit 0, not the grace period and a SIGKILL."""
    args = connector_args(live_simulator, redis_server, free_port())
    with container(host_engine, "--network", "host", *HARDENED, *args, connector_image) as box:
        time.sleep(delay)  # the scenario: `docker stop` this long after `docker run -d` returned
        code, seconds = box.stop()
        assert code == 0, f"exit {code} (137: killed after the grace period)\n{box.logs()}"
        with redis_client(redis_server) as client:
            assert client.exists(LEASE) == 0
    figure(f"docker stop {delay} s after docker run -d", f"exit {code} in {seconds:.2f} s")


# -- other commands and misconfiguration ----------------------------------------------------------


def test_simulate_command_turns_healthy(host_engine: DockerEngine, connector_image: str) -> None:
    """`docker run IMAGE simulate ...`: the HEALTHCHECK follows the command and probes the
    simulator's /health on its --port."""
    port = free_port()
    with container(
        host_engine, "--network", "host", *HARDENED, connector_image, "simulate", "--mode",
        "live", "--host", "127.0.0.1", "--port", str(port), "--symbols", "AAPL",
    ) as box:  # fmt: skip
        wait_for(
            "the simulator in the container",
            lambda: True if http_get(f"http://127.0.0.1:{port}/report")[0] == 200 else None,
            STARTUP,
        )
        health = wait_healthy(box)
        seconds = time.monotonic() - box.started
        assert health["Status"] == "healthy", health["Log"]
        figure("simulate container healthy after docker run", f"{seconds:.1f} s")


def test_unreadable_api_key_file_stops_start_up_with_exit_2(
    host_engine: DockerEngine, connector_image: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A secret file as root keeps it (0600, owned by root) cannot be read by UID 10001: the
    connector says what to do and exits 2 (a configuration error), instead of retrying."""
    key = tmp_path / "trading_api_key"
    key.write_text("NOT-A-REAL-KEY\n")
    key.chmod(0o600)
    assert key.stat().st_uid == 0
    mount = ["-v", f"{key}:/run/secrets/trading_api_key:ro"]
    settings = [
        "-e", "CONNECTOR_API_KEY_FILE=/run/secrets/trading_api_key",
        *connector_args(free_port(), redis_server, free_port()),
    ]  # fmt: skip
    with container(
        host_engine, "--network", "host", *HARDENED, *mount, *settings, connector_image
    ) as box:
        code = int(host_engine.docker("wait", box.id, timeout=STARTUP).stdout.strip())
        logs = box.logs()
    assert code == 2, logs
    assert "configuration error" in logs
    assert f"cannot read /run/secrets/trading_api_key: {UNREADABLE_KEY_MESSAGE}" in logs

    # Control: the same file made readable (0444) passes the configuration check.
    key.chmod(0o444)
    shown = host_engine.docker(
        "run", "--rm", "--network", "host", *HARDENED, *mount, *settings, connector_image,
        "run", "--print-config", check=False,
    )  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    assert "NOT-A-REAL-KEY" not in shown.stdout + shown.stderr
