"""A private, throw-away ``redis-server`` on loopback: the demo, the benchmark and the tests.

Only the pieces they share live here (a free port, the binary, the command line); each caller
keeps its own way of waiting for readiness and of stopping what it started.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Sequence

INSTALL_HINT = "Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis"


# Ports free_port handed out in this process: the kernel may offer a port again as soon as the
# probe closes, so two calls before either port is bound (a simulator's and a connector's HTTP
# port) could otherwise get the same one.
_handed_out: set[int] = set()


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1, and not one this process got before."""
    port = 0
    for _ in range(64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            break
    _handed_out.add(port)
    return port


def redis_server_binary() -> str | None:
    """The ``redis-server`` on PATH, or None."""
    return shutil.which("redis-server")


def private_server_argv(
    binary: str, port: int, directory: str, extra_args: Sequence[str] = ()
) -> list[str]:
    """A server that binds loopback only and keeps nothing on disk (no RDB, no AOF)."""
    return [
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        directory,
        # Loopback only and no password: protected mode would refuse the cluster bus and the
        # tests' CONFIG calls without adding anything.
        "--protected-mode",
        "no",
        "--loglevel",
        "notice",
        *extra_args,
    ]
