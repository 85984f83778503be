"""Sampling profiles of the connector process with py-spy, and where its CPU time goes.

``py-spy record --pid PID --format raw`` writes collapsed stacks (``root;...;leaf COUNT``, one
line per distinct stack). Each sample is charged to a *layer* by its innermost frame that belongs
to a known component, so the shares add up to 100 % of the samples in which the connector was on
CPU (py-spy leaves idle samples out unless asked):

* ``websockets``: frame parsing, masking, the protocol state machine, ``recv``/``send``;
* ``json (orjson)``: the lines of connector code that call ``orjson`` (found in the source, so
  the C time of ``orjson.loads``/``dumps``, which py-spy charges to the calling line, is split
  out of the module around it);
* ``protocol (validation)``: the rest of ``protocol.py`` (timestamps, decimals, typed events);
* ``router/encoding``: ``router.py`` and ``streams.py`` (typed event -> stream fields, keys);
* ``publisher/writer``: batching, de-duplication, ``writer.py``'s ids and result checks;
* ``redis-py``: building the pipeline, packing commands, parsing replies (hiredis included);
* ``acks``: ``acks.py``, ``confirm.py``;
* ``metrics``: prometheus-client counters and histograms;
* ``session/app``: the read loop and the service wiring;
* ``asyncio: epoll/selector``: ``selectors.py`` (the ``epoll_wait`` call and the Python code
  around it that turns ready file descriptors into callbacks, once per loop iteration);
* ``asyncio: loop, tasks, transports``: the rest of the event loop, tasks, futures, timeouts and
  the socket transports (their ``send``/``recv`` calls included);
* ``other``: anything else.

py-spy is optional: without it the profile step is skipped with a message.
"""

from __future__ import annotations

import shutil
import signal
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import connector
from connector_bench.procs import Managed, Processes

JSON_LAYER = "json (orjson)"

#: (layer, substrings of a frame's file path that belong to it), checked in order.
LAYER_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("websockets", ("websockets/",)),
    (JSON_LAYER, ("orjson",)),
    ("protocol (validation)", ("connector/trading/protocol.py",)),
    ("router/encoding", ("connector/trading/router.py", "connector/streams/schema.py")),
    (
        "publisher/writer",
        (
            "connector/streams/publisher.py",
            "connector/streams/writer.py",
            "connector/streams/registry.py",
        ),
    ),
    ("redis-py", ("redis/", "hiredis")),
    ("acks", ("connector/acks/acknowledger.py", "connector/acks/consumer_gate.py")),
    ("metrics", ("prometheus_client",)),
    ("session/app", ("connector/trading/session.py", "connector/app.py")),
    # The confirming consumer process (`connector consume`): its reads, confirmations and handler.
    ("consumer toolkit", ("connector/consumer/group.py", "connector/consumer/command.py")),
    ("asyncio: epoll/selector", ("selectors.py",)),
    ("asyncio: loop, tasks, transports", ("asyncio/", "uvloop")),
)
LAYERS: tuple[str, ...] = (*(layer for layer, _ in LAYER_RULES), "other")

#: {"connector/trading/protocol.py": {148, ...}}: lines of connector code that call orjson.
JsonLines = dict[str, frozenset[int]]


def orjson_call_lines(package_dir: Path | None = None) -> JsonLines:
    """Find the lines of the connector's own modules that call ``orjson``."""
    root = package_dir or Path(connector.__file__).resolve().parent
    found: JsonLines = {}
    for path in sorted(root.rglob("*.py")):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        hits = frozenset(n for n, text in enumerate(lines, 1) if "orjson." in text)
        if hits:
            found[f"connector/{path.relative_to(root).as_posix()}"] = hits
    return found


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[str], int]]:
    """``[(frames root..leaf, samples)]`` from py-spy's raw (collapsed stack) output."""
    stacks: list[tuple[list[str], int]] = []
    for line in lines:
        line = line.rstrip("\n")
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append((stack.split(";"), int(count)))
    return stacks


def frame_location(frame: str) -> tuple[str, int | None]:
    """(file, line) of a py-spy frame ``"function (path/to/file.py:123)"``."""
    start = frame.rfind("(")
    if start < 0:
        return "", None
    inside = frame[start + 1 :].rstrip(")")
    path, sep, line = inside.rpartition(":")
    if sep and line.isdigit():
        return path, int(line)
    return inside, None


def frame_file(frame: str) -> str:
    return frame_location(frame)[0]


def frame_function(frame: str) -> str:
    """``"recv (websockets/frames.py:322)"`` -> ``"recv (websockets/frames.py)"``."""
    path = _short_path(frame_file(frame))
    name = frame.split(" (", 1)[0].strip()
    return f"{name} ({path})" if path else name


def _short_path(path: str) -> str:
    for marker in ("site-packages/", "lib/python3."):
        if marker in path:
            tail = path.split(marker, 1)[1]
            return tail.split("/", 1)[1] if marker == "lib/python3." and "/" in tail else tail
    if "/connector/" in path:
        return "connector/" + path.rsplit("/connector/", 1)[1]
    return path


def classify(frames: list[str], json_lines: JsonLines | None = None) -> str:
    """The layer of the innermost frame (leaf first) that belongs to a known component."""
    for frame in reversed(frames):
        path, line = frame_location(frame)
        if json_lines and line is not None and line in json_lines.get(path, ()):
            return JSON_LAYER
        for layer, needles in LAYER_RULES:
            if any(needle in path for needle in needles):
                return layer
    return "other"


def layer_shares(
    stacks: list[tuple[list[str], int]], json_lines: JsonLines | None = None
) -> dict[str, float]:
    """Percent of samples per layer (every layer present, in :data:`LAYERS` order)."""
    totals: Counter[str] = Counter()
    for frames, count in stacks:
        totals[classify(frames, json_lines)] += count
    grand = sum(totals.values())
    return {layer: (100.0 * totals[layer] / grand if grand else 0.0) for layer in LAYERS}


def top_functions(
    stacks: list[tuple[list[str], int]], limit: int = 15
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """(self %, inclusive %) top ``limit`` functions; inclusive counts a function once per stack."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    grand = 0
    for frames, count in stacks:
        grand += count
        if frames:
            own[frame_function(frames[-1])] += count
        for name in {frame_function(frame) for frame in frames}:
            inclusive[name] += count
    if not grand:
        return [], []

    def pct(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, 100.0 * n / grand) for name, n in counter.most_common(limit)]

    return pct(own), pct(inclusive)


def summarize(path: Path) -> dict[str, Any]:
    """Layer shares and top functions of one collapsed-stack file."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        stacks = parse_collapsed(handle)
    own, inclusive = top_functions(stacks)
    return {
        "file": str(path),
        "samples": sum(count for _, count in stacks),
        "layers_pct": layer_shares(stacks, orjson_call_lines()),
        "top_self_pct": own,
        "top_inclusive_pct": inclusive,
    }


def py_spy_binary() -> str | None:
    """py-spy next to this interpreter (a virtualenv) or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    if beside.exists():
        return str(beside)
    return shutil.which("py-spy")


class Profiler:
    """Attaches ``py-spy record`` to one process (and optional helpers, e.g. the confirming
    consumer) for the measured window of a run."""

    def __init__(self, directory: Path | None, tag: str, rate: int = 250) -> None:
        self.directory = directory
        self.tag = tag
        self.rate = rate
        self.outputs: dict[str, Path] = {}
        self._spies: dict[str, Managed] = {}
        self.error: str | None = None

    def start(
        self, processes: Processes, target: Managed, helpers: dict[str, Managed] | None = None
    ) -> None:
        binary = py_spy_binary()
        if binary is None or self.directory is None:
            self.error = "py-spy is not installed (pip install py-spy)"
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        for name, process in {"main": target, **(helpers or {})}.items():
            suffix = "" if name == "main" else f"-{name}"
            output = self.directory / f"{self.tag}{suffix}.txt"
            argv = [
                binary,
                "record",
                "--pid",
                str(process.pid),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--output",
                str(output),
            ]
            self.outputs[name] = output
            self._spies[name] = processes.start(f"py-spy{suffix}", argv)

    def stop(self) -> None:
        """SIGINT makes py-spy write its output and exit (it also stops when the target ends)."""
        for spy in self._spies.values():
            spy.stop(grace=20.0, signum=signal.SIGINT)

    def summary(self) -> dict[str, Any]:
        if self.error is not None:
            return {"error": self.error}
        result = self._one("main")
        helpers = {name: self._one(name) for name in self.outputs if name != "main"}
        if helpers:
            result["helpers"] = helpers
        return result

    def _one(self, name: str) -> dict[str, Any]:
        output = self.outputs.get(name)
        if output is None or not output.exists():
            spy = self._spies.get(name)
            tail = spy.log_tail() if spy is not None else ""
            return {"error": f"py-spy wrote no profile: {tail}"}
        return summarize(output)
