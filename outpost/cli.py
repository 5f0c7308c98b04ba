"""The command-line shape both services share: ``run``, ``check-config``, ``--version``."""

from __future__ import annotations

import argparse
from typing import Any

import outpost

LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]


def service_parser(
    prog: str, description: str, run_help: str, config_name: str
) -> tuple[argparse.ArgumentParser, Any]:
    """A parser with ``run`` and ``check-config``; returns it and its subparsers."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help=run_help)
    run.add_argument("--config", metavar="FILE", help=f"{config_name} (defaults if omitted)")
    run.add_argument("--check-config", action="store_true", help="validate the config and exit")
    run.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
    check = sub.add_parser("check-config", help="validate the config and exit")
    check.add_argument("--config", metavar="FILE")
    return parser, sub


def add_version(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--version`` on ``parser`` and every subcommand under it (call once it is complete)."""
    name = parser.prog.split()[0]
    parser.add_argument("--version", action="version", version=f"{name} {outpost.__version__}")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                add_version(child)
    return parser
