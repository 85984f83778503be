"""The ``connector`` command: run, simulate, demo, consume, streams, bench.

``connector run`` takes its configuration from ``CONNECTOR_*`` variables; every setting also has a
flag (generated from the settings model, so the two can never disagree) that overrides it.
Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration or usage, 3 a backtest run that
did not complete. A user's mistake is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from connector import __version__, launch, loop
from connector.config import (
    ConfigError,
    Settings,
    describe_unknown,
    env_name,
    flag_name,
    load_settings,
    setting_sources,
    unknown_variables,
)

EXIT_CONFIG = 2

MAIN_EPILOG = """\
examples:
  connector run                                   the service (settings: CONNECTOR_* variables)
  connector run --print-config                    the effective settings and where each comes from
  connector simulate --mode backtest --steps 500  a Trading API on this machine, to try it out
  connector demo                                  a backtest through the connector, with a strategy
  connector consume --group risk --print          follow the streams in a consumer group
  connector streams                               the streams under a prefix, lengths and groups

Every command explains itself with --help. The README's quick start, the settings table
(docs/deploy.md, "Configuration") and the runbook (docs/operations.md) come with the source.
"""

RUN_EPILOG = """\
Every flag overrides its CONNECTOR_* variable; a CONNECTOR_* variable that names no setting is an
error (exit 2), as is a bad value. Exit codes: 0 clean stop (or a completed backtest), 1 runtime
failure, 2 configuration, 3 a backtest run that did not complete.

examples:
  CONNECTOR_API_URL=wss://gateway:8080/v1/ws CONNECTOR_MODE=backtest connector run
  connector run --mode backtest --ack-mode consumer --consumer-groups 'risk, signals[types=candle]'
  connector run --print-config
"""


def _default_text(name: str) -> str:
    field = Settings.model_fields[name]
    if name == "session_id":
        return "<host>-<pid>-<random>"  # computed per process
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "unset"
    if isinstance(default, list | tuple):
        return ", ".join(str(item) for item in default) or "none"
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def _metavar(field: FieldInfo) -> str:
    annotation: Any = field.annotation
    args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
    if args and typing.get_origin(annotation) is not typing.Literal:
        annotation = args[0] if len(args) == 1 else annotation
    if typing.get_origin(annotation) is typing.Literal:
        return "{" + ",".join(str(value) for value in typing.get_args(annotation)) + "}"
    if annotation is SecretStr:
        return "SECRET"
    if annotation is Path:
        return "FILE"
    if annotation is float:
        return "SECONDS"
    if annotation is int:
        return "N"
    if typing.get_origin(annotation) is tuple:
        return "GROUPS"
    return "TEXT"


def _add_run(sub: Any) -> None:
    parser = sub.add_parser(
        "run",
        help="run the connector service",
        description="Keep the Trading API session and publish every event to Redis Streams.",
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("settings (each overrides its CONNECTOR_* variable)")
    for name, field in Settings.model_fields.items():
        extra = f"{env_name(name)}; default: {_default_text(name)}"
        common: dict[str, Any] = {
            "dest": f"setting_{name}",
            "default": None,
            "help": f"{field.description} [{extra}]".replace("%", "%%"),
        }
        if field.annotation is bool:
            group.add_argument(flag_name(name), action=argparse.BooleanOptionalAction, **common)
        else:
            group.add_argument(flag_name(name), metavar=_metavar(field), **common)
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective settings (secrets masked), where each comes from (default, "
        "environment, flag) and unknown CONNECTOR_* variables, then exit (2 if any is unknown)",
    )
    parser.set_defaults(func=_cmd_run)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        name: value
        for name in Settings.model_fields
        if (value := getattr(args, f"setting_{name}", None)) is not None
    }


def _cmd_run(args: argparse.Namespace) -> int:
    from connector.logs import setup_logging

    overrides = _overrides(args)
    if args.print_config:
        return _print_config(overrides)
    try:
        settings = load_settings(overrides)
    except ConfigError as exc:
        return config_error(exc)
    setup_logging(settings.log_level, settings.log_format, settings.secrets())
    try:
        return loop.run(_serve(settings), settings.event_loop)
    except (loop.LoopUnavailable, ConfigError) as exc:
        # ConfigError here: found only once running (a busy port, Redis refusing the
        # credentials or the database), after the service closed what it had opened.
        return config_error(exc)


def _print_config(overrides: dict[str, Any]) -> int:
    try:
        settings = load_settings(overrides, strict=False)
    except ConfigError as exc:
        return config_error(exc)
    unknown = unknown_variables()
    shown = {
        "settings": settings.describe(),
        "sources": setting_sources(overrides),
        "unknown_variables": dict(unknown),
    }
    sys.stdout.write(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode() + "\n")
    if unknown:
        return config_error(ConfigError(describe_unknown(unknown)))
    return 0


def config_error(exc: Exception) -> int:
    """One line on stderr for a configuration or usage mistake; the exit code for it."""
    print(f"connector: configuration error: {exc}", file=sys.stderr)
    return EXIT_CONFIG


async def _serve(settings: Settings) -> int:
    from connector.app import Connector

    app = Connector(settings)
    app.install_signal_handlers()
    return await app.run()


def _add_simulate(sub: Any) -> None:
    from connector.sim import command

    parser = sub.add_parser(
        "simulate",
        help="run the Trading API simulator (backtest engine or live feed, REST orders)",
        description="A Trading API server on /ws and /v1/ws (and its REST order surface on the "
        "same port), faithful to the real wire protocol. See docs/simulator.md.",
    )
    command.configure_parser(parser)
    parser.set_defaults(func=command.run)


def _add_module_command(sub: Any, name: str, module: str, help_text: str) -> None:
    """A sub-command defined by its own module (its ``configure_parser`` and ``run``)."""
    import importlib

    mod = importlib.import_module(module)
    parser = sub.add_parser(
        name,
        help=help_text,
        description=mod.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    mod.configure_parser(parser)
    parser.set_defaults(func=mod.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="connector",
        description="Market-data connector: the Trading API's WebSocket session (Tektii's "
        "trading gateway and backtest engine) into Redis Streams, with Prometheus metrics.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"connector {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_simulate(sub)
    _add_module_command(
        sub, "demo", "connector.demo", "one-command tour: simulator, connector and a strategy"
    )
    _add_module_command(
        sub, "consume", "connector.consumer.command", "example downstream consumer (reads a group)"
    )
    _add_module_command(
        sub, "streams", "connector.streams.inventory", "list (or clear) the streams of a prefix"
    )
    _add_bench(sub)
    return parser


BENCH_MISSING = (
    "connector bench: the benchmark harness is not installed here (it is not part of the "
    "connector's package or image). From a checkout: make bench, or "
    "pip install -e . -e ./bench"
)


def _add_bench(sub: Any) -> None:
    """``connector bench`` lives in its own distribution (``bench/``), so that it never ships
    in the production image: say how to get it where it is missing."""
    import importlib.util

    help_text = "benchmark against the Hello World loop (development installs)"
    if importlib.util.find_spec("connector_bench") is not None:
        _add_module_command(sub, "bench", "connector_bench.command", help_text)
        return
    parser = sub.add_parser("bench", help=help_text, add_help=False)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    parser.set_defaults(func=_bench_missing)


def _bench_missing(args: argparse.Namespace) -> int:
    print(BENCH_MISSING, file=sys.stderr)
    return EXIT_CONFIG


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command != "run":
        # Only the service handles stop signals itself (see connector.launch).
        launch.restore_default_signals()
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
