#!/usr/bin/env python3
"""Container health check for the connector image, standard library only (no curl in the image).

Usage: ``connector-healthcheck [PATH | URL]``

* no argument: ``GET http://127.0.0.1:$CONNECTOR_HTTP_PORT/healthz`` (port default 9464);
* a path such as ``/readyz``: the same host and port, that path;
* a full ``http://`` URL: that URL (e.g. the simulator's ``http://127.0.0.1:8080/report``).

Exit status 0 when the answer is HTTP 200, 1 otherwise (the Docker HEALTHCHECK contract).
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_PORT = "9464"
TIMEOUT_SECONDS = 2.0


def target(argv: list[str]) -> str:
    arg = argv[1] if len(argv) > 1 else "/healthz"
    if arg.startswith(("http://", "https://")):
        return arg
    port = os.environ.get("CONNECTOR_HTTP_PORT") or DEFAULT_PORT
    return f"http://127.0.0.1:{port}/{arg.lstrip('/')}"


def main(argv: list[str]) -> int:
    url = target(argv)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
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


if __name__ == "__main__":
    sys.exit(main(sys.argv))
