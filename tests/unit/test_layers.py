"""The tree shows the data flow, and dependencies point one way (docs/design.md):

    trading/ (frames in)  ->  streams/ (entries stored)  ->  acks/ (acks released)
                 wire/ (Redis connections) beneath;  consumer/ (the public toolkit) beside

Each package may import only what its row below allows; the top level (app, cli, demo, ...) may
import anything, and no package imports the top level's composition (app, demo)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "connector"
# Shared, leaf-like top-level modules every package may use.
COMMON = ("connector.config", "connector.logs", "connector.metrics", "connector.loop")
ALLOWED: dict[str, tuple[str, ...]] = {
    # Frames become entries here; entries leave through a callable, never the publisher.
    "trading": ("connector.trading", "connector.streams.schema"),
    "streams": ("connector.streams", "connector.wire", "connector.trading.protocol"),
    "acks": ("connector.acks", "connector.streams", "connector.wire", "connector.trading.protocol"),
    "wire": ("connector.wire",),
    "consumer": (
        "connector.consumer",
        "connector.wire",
        "connector.streams.schema",
        "connector.streams.groups",
    ),
}
# Commands (`connector streams`, `connector consume`) report errors the way every command does.
COMMANDS = {"streams/inventory.py", "consumer/command.py"}


def imported(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name == "connector" or name.startswith("connector.")}


def allowed(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def violations() -> list[str]:
    found = []
    for package, prefixes in ALLOWED.items():
        for path in sorted((PACKAGE / package).rglob("*.py")):
            relative = str(path.relative_to(PACKAGE))
            extra = ("connector.cli",) if relative in COMMANDS else ()
            for name in sorted(imported(path)):
                if name in ("connector", "connector.__version__"):
                    continue
                parent = name.rsplit(".", 1)[0]
                ok = (*prefixes, *COMMON, *extra)
                if not (allowed(name, ok) or (allowed(parent, ok) and parent != "connector")):
                    found.append(f"{relative} imports {name}")
    return found


def test_dependencies_point_one_way() -> None:
    assert violations() == []


def test_the_rule_catches_a_backwards_import(tmp_path: Path) -> None:
    """The check itself: a router that imported the publisher would be reported."""
    module = tmp_path / "router.py"
    module.write_text("from connector.streams.publisher import Publisher\n")
    names = imported(module)
    assert names == {"connector.streams.publisher", "connector.streams.publisher.Publisher"}
    assert not any(allowed(name, (*ALLOWED["trading"], *COMMON)) for name in names)
