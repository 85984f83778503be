#!/usr/bin/env python3
"""Container health check for the connector image, standard library only (no curl in the image).

Usage: ``connector-healthcheck [PATH | URL]``

* no argument: probe what the container runs, read from PID 1's command line (tini, then
  ``connector COMMAND ...``):

  - ``run``: ``GET /healthz`` on the ops port (``--http-port``, else ``CONNECTOR_HTTP_PORT``,
    else 9464);
  - ``simulate``: ``GET /health`` on the simulator's ``--port`` (https when it serves TLS);
  - any other command (``consume``, ``demo``, ...): nothing to probe, healthy while it runs;

* a path such as ``/readyz``: that path on the ops port;
* a full ``http://`` URL: that URL.

Exit status 0 when the answer is HTTP 200, 1 otherwise (the Docker HEALTHCHECK contract).
"""

from __future__ import annotations

import os
import ssl
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_PORT = "9464"
TIMEOUT_SECONDS = 2.0
PROC_CMDLINE = Path("/proc/1/cmdline")


def container_command(cmdline: list[str]) -> tuple[str, list[str]] | None:
    """(command, its arguments) of the connector in ``cmdline`` (command "" when it has none,
    as with ``--version``); None when the connector is not what runs."""
    for index, arg in enumerate(cmdline):
        if os.path.basename(arg) == "connector":
            rest = cmdline[index + 1 :]
            for position, word in enumerate(rest):
                if not word.startswith("-"):
                    return word, rest[position + 1 :]
            return "", rest
    return None


def option(args: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` (the last one wins, as in argparse)."""
    found = None
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            found = args[index + 1]
        elif arg.startswith(name + "="):
            found = arg.split("=", 1)[1]
    return found


def ops_url(path: str, args: list[str]) -> str:
    port = option(args, "--http-port") or os.environ.get("CONNECTOR_HTTP_PORT") or DEFAULT_PORT
    return f"http://127.0.0.1:{port}/{path.lstrip('/')}"


def target(argv: list[str], cmdline: list[str]) -> str | None:
    """The URL to probe, or None when the running command has nothing to probe."""
    if len(argv) > 1:
        arg = argv[1]
        return arg if arg.startswith(("http://", "https://")) else ops_url(arg, [])
    found = container_command(cmdline)
    if found is None:  # not started as `connector ...`: assume the service
        return ops_url("/healthz", [])
    command, args = found
    if command == "run":
        return ops_url("/healthz", args)
    if command == "simulate":
        port = option(args, "--port") or "0"
        if port == "0":
            return None  # a port picked at random: nothing known to probe
        scheme = "https" if option(args, "--tls-cert") else "http"
        return f"{scheme}://127.0.0.1:{port}/health"
    return None


def read_cmdline(path: Path = PROC_CMDLINE) -> list[str]:
    try:
        raw = path.read_bytes()
    except OSError:
        return []
    return [part.decode("utf-8", "replace") for part in raw.split(b"\0") if part]


def probe(url: str) -> int:
    # A loopback liveness probe: the simulator's certificate is for its clients' names.
    context = ssl._create_unverified_context() if url.startswith("https://") else None
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS, context=context) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {url}: {exc}", file=sys.stderr)
        return 1
    if status != 200:
        print(f"unhealthy: {url}: HTTP {status}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    url = target(argv, read_cmdline())
    if url is None:
        return 0
    return probe(url)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
