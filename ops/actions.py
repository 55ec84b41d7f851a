"""Sub-actions of an operator command (``python -m ops prices import ...``), and the
argument types the commands share."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from shared.rating.engine import Month


def action_adder(parser: argparse.ArgumentParser) -> Callable[[str, str], argparse.ArgumentParser]:
    """A function adding one required sub-action to ``parser``; each also takes
    ``--settings-file`` after the action (SUPPRESS keeps a value given before it)."""
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--settings-file",
            type=Path,
            default=argparse.SUPPRESS,
            help="read app settings from this local.settings.json (default: the environment)",
        )
        return sub

    return action


def month_argument(text: str) -> Month:
    """An argparse type: ``yyyy-MM`` as a month, else one line saying so."""
    month = Month.parse(text)
    if month is None:
        raise argparse.ArgumentTypeError(f"{text!r} is not a month (yyyy-MM)")
    return month
