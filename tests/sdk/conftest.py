"""The official SDK's own virtual environment, built once per session from the hash-locked file.

The SDK pins ``websockets<17`` while the project runs websockets 17, so it can never share the
project's environment: it gets a venv of its own, installed with ``pip --require-hashes`` from
requirements.lock (wheels only), and runs as a subprocess. Without network the venv cannot be
built and the tests that need it are skipped, saying so.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

LOCK = Path(__file__).with_name("requirements.lock")
BUILD_TIMEOUT = 600.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sdk: runs the official SDK (PyPI tektii) in a venv built from a hash lock"
    )


@pytest.fixture(scope="session")
def sdk_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The interpreter of a fresh venv holding exactly requirements.lock."""
    venv = tmp_path_factory.mktemp("sdk-venv")
    python = venv / "bin" / "python"
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-input",
            "--require-hashes",
            "--no-deps",
            "--only-binary",
            ":all:",
            "-r",
            str(LOCK),
        ],
    ]
    for argv in steps:
        try:
            subprocess.run(argv, check=True, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
        except subprocess.CalledProcessError as exc:
            tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-3:]
            pytest.skip(f"cannot build the SDK venv from {LOCK.name}: {' / '.join(tail)}")
        except (subprocess.TimeoutExpired, OSError) as exc:
            pytest.skip(f"cannot build the SDK venv from {LOCK.name}: {exc}")
    return python
