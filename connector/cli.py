"""The ``connector`` command: run, simulate, demo, consume, bench.

``connector run`` takes its configuration from ``CONNECTOR_*`` variables; every setting also has a
flag (generated from the settings model, so the two can never disagree) that overrides it.
Exit codes: 0 clean stop, 1 runtime failure, 2 bad configuration or usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from connector import __version__, launch, loop
from connector.config import ENV_PREFIX, ConfigError, Settings, env_name, flag_name, load_settings

EXIT_CONFIG = 2


def _default_text(name: str) -> str:
    field = Settings.model_fields[name]
    if name == "session_id":
        return "<host>-<pid>"  # computed per process
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "unset"
    if isinstance(default, list | tuple):
        return ", ".join(str(item) for item in default) or "empty"
    if isinstance(default, bool):
        return str(default).lower()
    return str(default)


def _settings_epilog() -> str:
    lines = ["settings (environment variable, flag, default):"]
    for name, field in Settings.model_fields.items():
        lines.append(f"  {env_name(name)}  {flag_name(name)}  [default: {_default_text(name)}]")
        lines.extend(
            textwrap.wrap(
                field.description or "", 88, initial_indent="      ", subsequent_indent="      "
            )
        )
    lines.append("")
    lines.append("Flags override variables. Values are validated at start-up; a bad one stops")
    lines.append("the service with a message naming it (exit code 2).")
    return "\n".join(lines)


def _add_run(sub: Any) -> None:
    parser = sub.add_parser(
        "run",
        help="run the connector service",
        description="Keep a Trading API session and publish every event to Redis Streams.",
        epilog=_settings_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    group = parser.add_argument_group("settings (each overrides its CONNECTOR_* variable)")
    for name, field in Settings.model_fields.items():
        group.add_argument(
            flag_name(name),
            dest=f"setting_{name}",
            metavar="VALUE",
            default=None,
            help=f"{field.description} [{env_name(name)}]",
        )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective configuration (secrets masked) and exit",
    )
    parser.set_defaults(func=_cmd_run)


def _cmd_run(args: argparse.Namespace) -> int:
    from connector.logs import setup_logging

    settings = _settings_from(args)
    if settings is None:
        return EXIT_CONFIG
    if args.print_config:
        sys.stdout.write(orjson.dumps(settings.describe(), option=orjson.OPT_INDENT_2).decode())
        sys.stdout.write("\n")
        return 0
    setup_logging(settings.log_level, settings.log_format, settings.secrets())
    _warn_unknown_variables()
    try:
        return loop.run(_serve(settings), settings.event_loop)
    except loop.LoopUnavailable as exc:
        print(f"connector: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG


async def _serve(settings: Settings) -> int:
    from connector.app import Connector

    app = Connector(settings)
    app.install_signal_handlers()
    return await app.run()


def _settings_from(args: argparse.Namespace) -> Settings | None:
    overrides = {
        name: value
        for name in Settings.model_fields
        if (value := getattr(args, f"setting_{name}", None)) is not None
    }
    try:
        return load_settings(overrides)
    except ConfigError as exc:
        print(f"connector: configuration error: {exc}", file=sys.stderr)
        return None


def _warn_unknown_variables() -> None:
    import logging

    known = {env_name(name) for name in Settings.model_fields}
    for variable in sorted(os.environ):
        if variable.upper().startswith(ENV_PREFIX) and variable.upper() not in known:
            logging.getLogger("connector.config").warning(
                "ignoring unknown variable (typo?)", extra={"variable": variable}
            )


def _add_simulate(sub: Any) -> None:
    from connector.sim import command

    parser = sub.add_parser(
        "simulate",
        help="run the Trading API simulator (backtest engine or live feed)",
        description="A Trading API server on /ws and /v1/ws, faithful to the real wire protocol.",
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
        description="Market-data connector: Trading API WebSocket session into Redis Streams.",
    )
    parser.add_argument("--version", action="version", version=f"connector {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run(sub)
    _add_simulate(sub)
    _add_module_command(
        sub, "demo", "connector.demo", "one-command tour: simulator + connector + consumer"
    )
    _add_module_command(
        sub, "consume", "connector.consume", "example downstream consumer (reads a group)"
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
