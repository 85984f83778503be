"""The dependency lock: one lock for everything, in step with pyproject.toml, and in use.

uv.lock pins every package for every platform with hashes; requirements/*.txt are its
pip-installable views (runtime for the image and the demo, dev for the tests, build for
setuptools). Everything here is offline: it reads the repository and the running venv.
"""

from __future__ import annotations

import shutil
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.support import ROOT, run

REQUIREMENTS = ROOT / "requirements"
LOCK_TOOL = ROOT / "tools" / "lock"


def _uv() -> str:
    beside = Path(sys.executable).parent / "uv"
    if beside.is_file():
        return str(beside)
    found = shutil.which("uv")
    if found is None:
        pytest.fail("uv is part of the dev lock: run the tests from the venv `make` builds")
    return found


def _check(root: Path) -> tuple[int, str]:
    result = run([str(root / "tools" / "lock"), "--check"], cwd=root, timeout=60)
    return result.returncode, result.stdout + result.stderr


def _pins(view: str) -> dict[str, tuple[str, Requirement]]:
    """name -> (version, requirement) of a requirements view, markers kept."""
    pins: dict[str, tuple[str, Requirement]] = {}
    text = (REQUIREMENTS / view).read_text(encoding="utf-8")
    for line in text.replace("\\\n", " ").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line.split(" --hash=")[0])
        assert "--hash=sha256:" in line, f"{view}: {requirement.name} has no hash"
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{view}: {line[:60]} is not pinned with =="
        pins[canonicalize_name(requirement.name)] = (spec.version, requirement)
    return pins


@pytest.fixture
def lock_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The files the lock check reads, in a scratch directory that a test may edit."""
    for name in ("pyproject.toml", "uv.lock", "README.md", "LICENSE", "tools/lock"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tmp_path / name)
    shutil.copytree(REQUIREMENTS, tmp_path / "requirements")
    monkeypatch.setenv("UV", _uv())
    return tmp_path


def test_the_lock_and_its_views_agree_with_pyproject(lock_copy: Path) -> None:
    status, output = _check(lock_copy)
    assert status == 0, output


def test_a_dependency_added_without_relocking_fails_the_check(lock_copy: Path) -> None:
    """Control: the check really compares (a new requirement is not in the lock)."""
    pyproject = lock_copy / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(text.replace('"orjson>=3.10",', '"orjson>=3.10",\n    "six>=1.16",'))
    status, output = _check(lock_copy)
    assert status != 0
    assert "lock" in output.lower()


def test_a_hand_edited_view_fails_the_check(lock_copy: Path) -> None:
    runtime = lock_copy / "requirements" / "runtime.txt"
    runtime.write_text(runtime.read_text(encoding="utf-8").replace("orjson==", "orjson==0.0.0#"))
    status, output = _check(lock_copy)
    assert status != 0
    assert "requirements/runtime.txt" in output


def test_every_direct_requirement_is_pinned_within_its_range() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    project = pyproject["project"]
    dev = _pins("dev.txt")
    runtime = _pins("runtime.txt")
    direct = [*project["dependencies"], *project["optional-dependencies"]["dev"]]
    for text in direct:
        requirement = Requirement(text)
        name = canonicalize_name(requirement.name)
        assert name in dev, f"{name} is not in requirements/dev.txt"
        assert requirement.specifier.contains(dev[name][0], prereleases=True), (text, dev[name])
    for name, (version, _) in runtime.items():
        assert dev[name][0] == version, f"{name}: runtime {version}, dev {dev[name][0]}"


def test_the_runtime_view_covers_older_python_patch_releases() -> None:
    """Debian 12's python3 is 3.11.2: redis needs async-timeout there, and the lock says so."""
    _, requirement = _pins("runtime.txt")["async-timeout"]
    assert requirement.marker is not None
    assert requirement.marker.evaluate({"python_full_version": "3.11.2"})
    assert not requirement.marker.evaluate({"python_full_version": "3.11.14"})


def test_the_running_environment_is_the_lock() -> None:
    """The tests run on exactly the pinned versions (make installs them from the lock)."""
    environment = {"extra": "dev"}
    for name, (version, requirement) in _pins("dev.txt").items():
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        installed = metadata.version(name)
        assert installed == version, f"{name}: installed {installed}, locked {version}"
