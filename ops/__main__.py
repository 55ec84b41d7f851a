"""Operator commands: ``python -m ops <command> [options]``; ``--help`` on each.

Each command is one module of this package exposing ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args, settings) -> int``; to add one, write the module
and list it in ``COMMANDS``. Settings come from the environment (the app settings), or
from a ``local.settings.json`` with ``--settings-file``; a module that needs none (it only
talks HTTP) sets ``NEEDS_SETTINGS = False`` and its ``run`` gets ``None``. Bad input is
one error line and exit 2; a failure that may clear by itself (storage, endpoint) is one
line and exit 3.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from devstack.fleet import register_simulated_source
from shared.core.config import Settings
from shared.core.errors import TransientError, UsageReporterError

# The operator CLI runs beside the local stack too (it is never deployed): with
# USAGE_SOURCE=simulated, `collect` reads the simulated fleet.
register_simulated_source()

# Subcommand name -> module (ops.<module>).
COMMANDS = {
    "aggregates": "aggregates",
    "token": "mint_token",  # not ops.token: that would shadow the stdlib's token module
    "collect": "collect",
    "subscriptions": "subscriptions",
    "reconcile": "reconcile",
    "requeue-poison": "requeue_poison",
    "export": "export",
    "exports": "exports",
    "prices": "prices",
    "statements": "statements",
    "adjustments": "adjustments",
    "status": "status",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but bad input is ONE line (no usage dump) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m ops", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(f"ops.{module_name}")
        sub = commands.add_parser(name, help=module.HELP, description=module.__doc__)
        sub.add_argument(
            "--settings-file",
            type=Path,
            help="read app settings from this local.settings.json (default: the environment)",
        )
        module.add_arguments(sub)
        sub.set_defaults(run=module.run, needs_settings=getattr(module, "NEEDS_SETTINGS", True))
    return parser


def load_settings(settings_file: Path | None) -> Settings:
    """The app settings: the environment, overlaid by a local.settings.json's Values."""
    values = dict(os.environ)
    if settings_file is not None:
        try:
            document = json.loads(settings_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise UsageReporterError(f"cannot read {settings_file}: {error}") from None
        values.update({str(k): str(v) for k, v in (document.get("Values") or {}).items()})
    return Settings.from_environ(values)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("azure").setLevel(logging.ERROR)
    try:
        settings = load_settings(args.settings_file) if args.needs_settings else None
        return int(args.run(args, settings))
    except TransientError as error:
        print(f"python -m ops {args.command}: unavailable: {error.message}", file=sys.stderr)
        return 3
    except UsageReporterError as error:
        print(f"python -m ops {args.command}: error: {error.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
