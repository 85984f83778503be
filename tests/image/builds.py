"""What the image tests build: the stand-in Python base, the connector image, the stand-ins.

The stand-in base replaces ``docker.io/library/python:3.11.14-slim-bookworm``, which cannot be
pulled here: a debootstrap of Debian bookworm (minbase) with Debian's python3 (3.11.2), its venv
and pip, CA certificates, netbase and tzdata, plus the host's additional CA certificates (pip in
the build reaches PyPI through the same proxy as the host), imported with ``docker import``.
Everything lives in the one test run's temporary directory; nothing is cached across runs.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from tests.support.docker_engine import DOCKER, DockerEngine

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).resolve().parent / "standins"
BASE_TAG = "standin/python:3.11-bookworm"  # TEST-ONLY: never publish
BASE_PACKAGES = (
    "python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates", "netbase",
    "tzdata",
)  # fmt: skip
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
BUILD_TIMEOUT = 900.0


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (not the security archive)."""
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        uris: list[str] = re.findall(r"^URIs:\s*(\S+)", text, re.MULTILINE)  # deb822 (.sources)
        uris += re.findall(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)", text, re.MULTILINE)  # one-line
        for uri in uris:
            if "security" not in uri and uri.startswith(("http://", "https://")):
                return uri
    return DEFAULT_MIRROR


def build_base(engine: DockerEngine, workdir: Path, tag: str = BASE_TAG) -> None:
    """debootstrap a bookworm rootfs, add the host's CAs, import it as ``tag``."""
    rootfs = workdir / "rootfs"
    log = workdir / "debootstrap.log"
    argv = [
        "debootstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", "bookworm",
        str(rootfs), debian_mirror(),
    ]  # fmt: skip
    with log.open("wb") as out:
        result = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, timeout=900)
    assert result.returncode == 0, f"debootstrap failed:\n{_tail(log)}"
    # What the official slim images leave out too: package caches and lists.
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    for certificate in HOST_CA_DIR.glob("**/*.crt"):
        shutil.copy2(certificate, rootfs / "usr/local/share/ca-certificates" / certificate.name)
    subprocess.run(
        ["chroot", str(rootfs), "update-ca-certificates"], check=True, capture_output=True
    )
    _import(engine, rootfs, tag)
    shutil.rmtree(rootfs)  # the image has it now; the disk space is better free


def _import(engine: DockerEngine, rootfs: Path, tag: str) -> None:
    tar = subprocess.Popen(
        ["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
    )
    try:
        imported = subprocess.run(
            [
                str(DOCKER), "import", "--change", "ENV LANG=C.UTF-8",
                "--change", 'CMD ["python3"]', "-", tag,
            ],
            stdin=tar.stdout,
            env=engine.env,
            capture_output=True,
            text=True,
            timeout=300,
        )  # fmt: skip
    finally:
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait(60)
    assert imported.returncode == 0, imported.stderr
    assert tar.returncode == 0, "tar of the rootfs failed"


def build_connector(engine: DockerEngine, tag: str, base: str, *, buildkit: bool) -> str:
    """The documented ``docker build -t TAG .`` from the repository root, with the stand-in
    base and host networking (the daemon has no bridge); returns the build's output."""
    result = engine.docker(
        "build", "--network", "host", "--build-arg", f"PYTHON_IMAGE={base}", "-t", tag, ".",
        env={"DOCKER_BUILDKIT": "1" if buildkit else "0"},
        cwd=ROOT,
        timeout=BUILD_TIMEOUT,
    )  # fmt: skip
    return result.stdout + result.stderr


def build_standin(engine: DockerEngine, target: str, tag: str, base: str) -> None:
    """One of the TEST-ONLY stand-ins (tests/image/standins), tagged as compose.yaml names it."""
    engine.docker(
        "build", "--network", "host", "--build-arg", f"BASE={base}", "--target", target,
        "--label", "org.opencontainers.image.description=TEST-ONLY stand-in; never publish",
        "-t", tag, str(STANDINS),
        env={"DOCKER_BUILDKIT": "1"},
        timeout=BUILD_TIMEOUT,
    )  # fmt: skip


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
