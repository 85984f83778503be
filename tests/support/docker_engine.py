"""A private Docker engine for the image tests (tests/image), leaving the host as it was.

Debian's ``docker.io`` (Engine 20.10) is installed when missing, then ``dockerd`` runs with its
own data root, exec root, socket and pid file under one temporary directory. Two modes share
that data root, so images built in one are there in the other:

* ``host``: ``--iptables=false --ip6tables=false --bridge=none --ip-forward=false``; the host's
  network and firewall are not touched. Builds and containers use ``--network host`` (there is
  no default bridge), which also lets a container reach a simulator and a Redis on loopback.
* ``netns``: the daemon runs inside a network namespace of its own, with bridges and iptables
  enabled there only (Compose needs user-defined networks and published ports). It is entered
  with ``nsenter --net=...``: ``ip netns exec`` also remounts /sys, which hides the cgroup
  mounts, and dockerd then refuses to start. What it publishes is reached with
  :meth:`DockerEngine.in_netns`.

:meth:`DockerEngine.close` stops the daemon (by its pid file), every process it left, unmounts
what it left under its roots, deletes the namespace and the files dockerd writes outside its
roots, and removes the directory. :class:`HostState` snapshots let a test prove it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Mode = Literal["host", "netns"]

DOCKER = Path("/usr/bin/docker")  # Debian's client: a newer one on PATH may lack buildx
DOCKERD = Path("/usr/sbin/dockerd")
APT_PACKAGES = ("docker.io", "iptables", "debootstrap")
REQUIRED_TOOLS = (DOCKER, DOCKERD, Path("/usr/sbin/iptables"), Path("/usr/sbin/debootstrap"))
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
RUN_NETNS = Path("/run/netns")
# Written outside the roots they are given: by dockerd/containerd/runc (Engine 20.10), and
# libmount's table of the mounts debootstrap makes.
HOST_TRACES = (
    Path("/etc/docker/key.json"),
    Path("/run/docker"),
    Path("/run/containerd"),
    Path("/run/runc"),
    Path("/run/mount"),
)


class EngineUnavailable(RuntimeError):
    """Docker cannot be installed or started here: the image tier is skipped with this text."""


# -- installation ---------------------------------------------------------------------------------


def missing_tools() -> list[str]:
    missing = [str(path) for path in REQUIRED_TOOLS if not path.exists()]
    missing += [name for name in ("nsenter", "ip", "umount") if shutil.which(name) is None]
    return missing


def install() -> bool:
    """Install Docker, iptables and debootstrap from Debian when something is missing.

    True when apt-get ran; raises EngineUnavailable when it cannot (not root, no apt, failure).
    """
    if not missing_tools():
        return False
    if os.geteuid() != 0:
        raise EngineUnavailable(f"not root; cannot install {' '.join(APT_PACKAGES)}")
    if shutil.which("apt-get") is None:
        raise EngineUnavailable(f"missing {missing_tools()} and no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *APT_PACKAGES],
    )
    for step in steps:
        result = subprocess.run(step, env=env, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise EngineUnavailable(f"{' '.join(step)} failed:\n{_last(result.stderr)}")
    if missing := missing_tools():
        raise EngineUnavailable(f"still missing after apt-get install: {missing}")
    return True


# -- what the host looks like ---------------------------------------------------------------------


def mount_points() -> list[str]:
    """Every mount point, in mount order (octal escapes such as \\040 decoded)."""
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        raw = line.split()[4]
        points.append(raw.encode().decode("unicode_escape"))
    return points


def _command_output(*argv: str) -> str:
    if shutil.which(argv[0]) is None:
        return f"({argv[0]} not installed)"
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    # iptables-save stamps its output with the time: keep only the rules.
    return "\n".join(line for line in result.stdout.splitlines() if not line.startswith("#"))


def processes_mentioning(text: str) -> dict[int, str]:
    """pid -> command line of every process whose command line contains ``text``."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in cmdline and int(entry.name) != os.getpid():
                found[int(entry.name)] = cmdline.strip()
    return found


@dataclass(frozen=True)
class HostState:
    """What a test run must leave as it found it."""

    mounts: frozenset[str]
    netns: str
    firewall: str
    traces: frozenset[Path]
    engine_processes: frozenset[int]

    @classmethod
    def take(cls) -> HostState:
        netns = _command_output("ip", "netns", "list")
        firewall = _command_output("iptables-save") + _command_output("ip6tables-save")
        engines = {
            pid
            for name in ("dockerd", "containerd", "docker-proxy")
            for pid in processes_mentioning(name)
        }
        return cls(
            mounts=frozenset(mount_points()),
            netns=netns,
            firewall=firewall,
            traces=frozenset(path for path in (*HOST_TRACES, RUN_NETNS) if path.exists()),
            engine_processes=frozenset(engines),
        )

    def differences(self, later: HostState, root: Path) -> list[str]:
        """What ``later`` has that this state had not (empty: the host is as it was)."""
        found = []
        if added := sorted(later.mounts - self.mounts):
            found.append(f"mounts added: {added}")
        if removed := sorted(self.mounts - later.mounts):
            found.append(f"mounts removed: {removed}")
        if later.netns != self.netns:
            found.append(f"ip netns list: {self.netns!r} -> {later.netns!r}")
        if later.firewall != self.firewall:
            found.append("the host's iptables rules changed")
        if traces := sorted(str(path) for path in later.traces - self.traces):
            found.append(f"left on the host: {traces}")
        if engines := sorted(later.engine_processes - self.engine_processes):
            found.append(f"engine processes still running: {engines}")
        if leftovers := processes_mentioning(str(root)):
            found.append(f"processes still using {root}: {leftovers}")
        return found


# -- the daemon -----------------------------------------------------------------------------------


class DockerEngine:
    """One private dockerd under ``root``; :meth:`use` picks (and switches) its mode."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_root = root / "data"
        self.exec_root = root / "exec"
        self.socket = root / "docker.sock"
        self.pidfile = root / "dockerd.pid"
        self.log = root / "dockerd.log"
        self.client_config = root / "client"  # the client writes here, not to ~/.docker
        self.netns = f"connector-image-test-{os.getpid()}"
        self.mode: Mode | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._netns_created = False
        self._run_netns_existed = RUN_NETNS.exists()
        self._run_netns_mounted = str(RUN_NETNS) in mount_points()
        self._traces_before = {path for path in HOST_TRACES if path.exists()}

    @property
    def env(self) -> dict[str, str]:
        """The environment for the docker client and docker-compose: this daemon only."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))}
        env.update(DOCKER_HOST=f"unix://{self.socket}", DOCKER_CONFIG=str(self.client_config))
        return env

    def docker(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 300,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """``docker ARGS`` against this daemon (Debian's client); fails loudly when ``check``."""
        result = subprocess.run(
            [str(DOCKER), *args],
            env={**self.env, **(env or {})},
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}:\n"
                f"{_last(result.stdout)}\n{_last(result.stderr)}"
            )
        return result

    def in_netns(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside the daemon's network namespace (netns mode)."""
        assert self.mode == "netns", "only the netns mode has a namespace of its own"
        return ["nsenter", f"--net={RUN_NETNS / self.netns}", *argv]

    def use(self, mode: Mode) -> float | None:
        """Run the daemon in ``mode``; the seconds a (re)start took, None when it already ran."""
        if self.mode == mode and self._process is not None and self._process.poll() is None:
            return None
        started = time.monotonic()
        self.stop()
        self._start(mode)
        return time.monotonic() - started

    def _start(self, mode: Mode) -> None:
        for path in (self.data_root, self.exec_root, self.client_config):
            path.mkdir(parents=True, exist_ok=True)
        argv = [
            str(DOCKERD),
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--host=unix://{self.socket}",
            f"--pidfile={self.pidfile}",
            "--storage-driver=overlay2",
            "--ip6tables=false",
        ]
        if mode == "host":
            argv += ["--iptables=false", "--bridge=none", "--ip-forward=false"]
        else:
            argv = self._enter_netns(argv)
        with self.log.open("ab") as log:
            log.write(f"\n=== dockerd, {mode} mode ===\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.mode = mode
        self._wait_until_ready()

    def _enter_netns(self, argv: list[str]) -> list[str]:
        if not self._netns_created:
            _run(["ip", "netns", "add", self.netns])
            self._netns_created = True
            _run(["ip", "-n", self.netns, "link", "set", "lo", "up"])
        return ["nsenter", f"--net={RUN_NETNS / self.netns}", *argv]

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise EngineUnavailable(
                    f"dockerd ({self.mode} mode) exited with {self._process.returncode}:\n"
                    + _last(self.log.read_text(errors="replace"))
                )
            if self.docker("version", check=False, timeout=10).returncode == 0:
                return
            time.sleep(0.2)  # polling pace; the condition above decides
        raise EngineUnavailable(
            f"dockerd did not answer within {START_TIMEOUT:.0f}s:\n"
            + _last(self.log.read_text(errors="replace"))
        )

    def remove_containers(self) -> list[str]:
        """Remove every container a test left behind (normally none); their ids."""
        if self.mode is None:
            return []
        left = self.docker("ps", "-aq", check=False, timeout=60).stdout.split()
        if left:
            self.docker("rm", "-f", "-v", *left, check=False, timeout=120)
        return left

    def stop(self) -> None:
        """Stop the daemon (its pid file names it) and whatever it left running or mounted."""
        pid = self._daemon_pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self._process is not None:
            try:
                self._process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(10)
            self._process = None
        self._kill_leftovers()
        self._unmount_leftovers()
        self.mode = None

    def _daemon_pid(self) -> int | None:
        """The pid file's process, if it is still our dockerd (a stale file's pid may have been
        reused by anything)."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if pid in processes_mentioning(f"--pidfile={self.pidfile}") else None

    def _kill_leftovers(self) -> None:
        """containerd, shims or docker-proxy still naming our roots (ours alone): SIGKILL."""
        for pid in processes_mentioning(str(self.root)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while processes_mentioning(str(self.root)) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling pace: the kernel tears the processes down

    def _unmount_leftovers(self) -> None:
        """Unmount, deepest first, what dockerd left under its roots (e.g. exec/netns/default)."""
        prefix = str(self.root) + "/"
        for point in sorted(
            {p for p in mount_points() if p.startswith(prefix) or p == str(self.root)},
            key=lambda p: p.count("/"),
            reverse=True,
        ):
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "--lazy", point], capture_output=True)

    def close(self) -> None:
        """Everything back as it was: daemon, namespace, host traces, the directory."""
        try:
            self.stop()
        finally:
            self._delete_netns()
            self._remove_traces()
            shutil.rmtree(self.root, ignore_errors=True)

    def _delete_netns(self) -> None:
        if self._netns_created:
            subprocess.run(["ip", "netns", "delete", self.netns], capture_output=True)
            self._netns_created = False
        # `ip netns add` bind-mounts /run/netns onto itself the first time; undo that when it is
        # ours and empty.
        ours = not self._run_netns_mounted and str(RUN_NETNS) in mount_points()
        if ours and _empty_dir(RUN_NETNS):
            subprocess.run(["umount", str(RUN_NETNS)], capture_output=True)
        if not self._run_netns_existed and _empty_dir(RUN_NETNS):
            with contextlib.suppress(OSError):
                RUN_NETNS.rmdir()

    def _remove_traces(self) -> None:
        for path in HOST_TRACES:
            if path in self._traces_before or not path.exists():
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def logs_tail(self, lines: int = 40) -> str:
        try:
            return _last(self.log.read_text(errors="replace"), lines)
        except OSError:
            return ""


@contextlib.contextmanager
def private_engine(root: Path) -> Iterator[DockerEngine]:
    """A :class:`DockerEngine` under ``root`` (not started yet), always closed."""
    engine = DockerEngine(root)
    try:
        yield engine
    finally:
        engine.close()


def _empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def _run(argv: Sequence[str]) -> None:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        raise EngineUnavailable(f"{' '.join(argv)} failed: {result.stderr.strip()}")


def _last(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])
