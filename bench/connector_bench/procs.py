"""Child processes of the benchmark: started in their own process group, always stopped.

Every process (redis-server, the simulator, the connector, the baseline, a consumer, py-spy) is
started through :class:`Processes`, which stops them all, in reverse order, when its ``with``
block ends, whatever happened: SIGTERM to the whole process group, then SIGKILL after a grace
period. Children are reaped with ``wait4`` so their resource usage (CPU, ``ru_maxrss``) is kept.

Output goes to files in the run's work directory (never pipes, which could fill up and block a
child), and readiness is read from those files or from the child's HTTP endpoint, never slept on.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from connector import localredis
from connector.localredis import free_port, private_server_argv
from connector_bench.procfs import ProcSample, read_sample

STOP_GRACE = 10.0
READY_TIMEOUT = 30.0
_PR_SET_PDEATHSIG = 1


def _load_libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


_LIBC = _load_libc()


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the harness dies, even by SIGKILL (Linux).

    The ``with Processes`` block stops children on any normal exit or exception; this covers
    the one case it cannot, the harness being killed outright.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class BenchError(RuntimeError):
    """A benchmark run could not be carried out (a process failed to start, a run stalled)."""


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The harness environment without any CONNECTOR_* variable (so nothing leaks into a run)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("CONNECTOR_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


class Managed:
    """One child process in its own process group, with its output in ``log_path``."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        stdout_path: Path | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.stdout_path = stdout_path
        self.rusage: resource.struct_rusage | None = None
        self.last_sample: ProcSample | None = None
        self._files: list[IO[bytes]] = []
        log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self._files.append(log)
        out: IO[bytes] = log
        if stdout_path is not None:
            out = open(stdout_path, "wb")  # noqa: SIM115 - closed in stop()
            self._files.append(out)
        try:
            self.popen = subprocess.Popen(
                self.argv,
                env=dict(env) if env is not None else child_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                start_new_session=True,  # its own process group: stopped as a whole
                preexec_fn=_die_with_parent,  # safe: the harness starts no threads
            )
        except OSError:
            self._close_files()
            raise

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.returncode

    def sample(self) -> ProcSample | None:
        """CPU and memory now (also readable for a zombie); remembers the last good reading."""
        if self.popen.returncode is not None:
            return None
        reading = read_sample(self.pid)
        if reading is not None:
            if reading.hwm_kb is None and self.last_sample is not None:
                # A zombie has no memory lines: keep the last peak seen while it was alive.
                reading = ProcSample(
                    reading.time,
                    reading.wall,
                    reading.state,
                    reading.cpu_s,
                    self.last_sample.rss_kb,
                    self.last_sample.hwm_kb,
                )
            self.last_sample = reading
        return reading

    def exited(self) -> bool:
        """True once the process has ended (zombie or reaped); does not reap it."""
        if self.popen.returncode is not None:
            return True
        reading = read_sample(self.pid)
        return reading is None or not reading.alive

    def wait_exit(self, timeout: float) -> bool:
        """Wait (without reaping) until the process ends; False on timeout."""
        deadline = time.monotonic() + timeout
        while not self.exited():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def send_signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def _reap(self, block: bool) -> bool:
        if self.popen.returncode is not None:
            return True
        try:
            pid, status, usage = os.wait4(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.popen.returncode = -1
            return True
        if pid == 0:
            return False
        self.rusage = usage
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        return True

    def stop(self, grace: float = STOP_GRACE, signum: int = signal.SIGTERM) -> int | None:
        """Stop the whole process group (``signum``, then SIGKILL after ``grace``); reap it."""
        if self.popen.returncode is None:
            self.sample()
            if not self.exited():
                self.send_signal(signum)
            deadline = time.monotonic() + grace
            while not self._reap(block=False):
                if time.monotonic() >= deadline:
                    self.send_signal(signal.SIGKILL)
                    self._reap(block=True)
                    break
                time.sleep(0.01)
        # Anything the child left behind in its group goes too.
        self.send_signal(signal.SIGKILL)
        self._close_files()
        return self.popen.returncode

    def _close_files(self) -> None:
        for handle in self._files:
            with contextlib.suppress(OSError):
                handle.close()
        self._files = []

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the child's stderr log, for error messages."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stdout_lines(self) -> list[str]:
        if self.stdout_path is None:
            return []
        try:
            return self.stdout_path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []


class Processes:
    """Starts children and guarantees they are all stopped when the ``with`` block ends."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Managed] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_all()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        capture_stdout: bool = False,
    ) -> Managed:
        log_path = self.workdir / f"{name}.log"
        stdout_path = self.workdir / f"{name}.out" if capture_stdout else None
        process = Managed(name, argv, log_path, env=env, stdout_path=stdout_path)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        for process in reversed(self.started):
            try:
                process.stop()
            except BaseException as exc:  # keep stopping the others, then re-raise
                errors.append(exc)
        self.started.clear()
        if errors:
            raise errors[0]


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    *,
    process: Managed | None = None,
    interval: float = 0.01,
) -> None:
    """Poll ``condition`` until true; BenchError after ``timeout`` or if ``process`` died."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.exited():
            raise BenchError(
                f"{process.name} exited (code {_code(process)}) while waiting for {what}:\n"
                + process.log_tail()
            )
        if time.monotonic() >= deadline:
            tail = f":\n{process.log_tail()}" if process is not None else ""
            raise BenchError(f"timed out after {timeout:g} s waiting for {what}{tail}")
        time.sleep(interval)


def _code(process: Managed) -> str:
    if process.returncode is not None:
        return str(process.returncode)
    reading = read_sample(process.pid)
    return "?" if reading is None else f"state {reading.state}"


def file_contains(path: Path, marker: str) -> bool:
    try:
        return marker in path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """GET ``url``: (status, body), or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), b""
    except (urllib.error.URLError, OSError, TimeoutError):
        return None


# The server every run starts (connector bench --redis-server); None: the redis-server on PATH.
_chosen_server: str | None = None


def use_redis_server(path: str | None) -> None:
    """Run ``path`` (another redis-server, a valkey-server) instead of the one on PATH."""
    global _chosen_server
    _chosen_server = path


def redis_server_binary() -> str:
    if _chosen_server is not None:
        return _chosen_server
    found = localredis.redis_server_binary()
    if found is None:
        raise BenchError(f"redis-server is not on PATH ({localredis.INSTALL_HINT})")
    return found


def start_redis(
    processes: Processes, name: str = "redis", extra_args: Sequence[str] = ()
) -> tuple[Managed, str]:
    """A private redis-server on a free loopback port (no persistence); returns it and its URL.

    ``extra_args`` are appended to the command line (e.g. cluster mode, see ``cluster.py``).
    """
    binary = redis_server_binary()
    directory = processes.workdir / f"{name}-data"
    directory.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for _ in range(3):
        port = free_port()
        argv = private_server_argv(binary, port, str(directory), extra_args)
        server = processes.start(name, argv, capture_stdout=True)
        try:
            wait_until(
                _contains(processes.workdir / f"{name}.out", "Ready to accept connections"),
                READY_TIMEOUT,
                "redis-server to be ready",
                process=server,
            )
        except BenchError as exc:
            last_error = str(exc)
            server.stop()
            continue
        return server, f"redis://127.0.0.1:{port}/0"
    raise BenchError(f"redis-server did not start: {last_error}")


def _contains(path: Path, marker: str) -> Callable[[], bool]:
    return lambda: file_contains(path, marker)
