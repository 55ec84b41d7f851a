"""Export configurations: list, add (or change) and remove the exports ``export_usage`` writes.

    python -m ops exports list
    python -m ops exports set --name focus-admin --scope admin
    python -m ops exports set --name reseller-1 --scope provider:<subscription id> \\
        --format csv --container reseller-1 --root-folder focus
    python -m ops exports set --name hub --scope admin --layout finopshubs --container ingestion
    python -m ops exports remove --name reseller-1

Scope ``admin`` covers every subscription, priced as the service admin bills it;
``provider:<id>`` a delegated provider's tenants only, at its resale sheet. Removing a
configuration stops its runs; its files stay where they are.
"""

from __future__ import annotations

import argparse

from shared.core.config import Settings
from shared.core.errors import BadInputError
from shared.export.configs import ExportConfigs, make_config
from shared.storage.account import StorageAccount

HELP = "list, add or change, and remove export configurations (name, scope, format, place)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "set", "remove"))
    parser.add_argument("--name", help="the export's name (3-64 letters, digits, '-', '_')")
    parser.add_argument("--scope", default="admin", help="admin or provider:<subscription id>")
    parser.add_argument("--format", default="parquet", help="parquet (default) or csv (gzip)")
    parser.add_argument("--container", default="usage-exports", help="blob container")
    parser.add_argument("--root-folder", default="focus", help="folder inside the container")
    parser.add_argument(
        "--layout", default="costmanagement", help="costmanagement (default) or finopshubs"
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    account = StorageAccount(settings)
    account.ensure_tables(["exports"])
    configs = ExportConfigs(account)
    if args.action == "list":
        found = configs.all()
        if not found:
            print("no exports configured (python -m ops exports set --name NAME --scope admin)")
        for config in found:
            print(
                f"{config.name}\tscope={config.scope}\tformat={config.file_format.value}\t"
                f"layout={config.layout.value}\t{config.container}/{config.root_folder}"
            )
        return 0
    if not args.name:
        raise BadInputError("give --name")
    if args.action == "remove":
        if not configs.delete(args.name):
            raise BadInputError(f"no export named {args.name!r}")
        print(f"removed {args.name} (its files stay)")
        return 0
    config = make_config(
        args.name, args.scope, args.format, args.container, args.root_folder, args.layout
    )
    configs.put(config)
    print(f"stored {config.name}: scope={config.scope}, {config.file_format.value}, "
          f"{config.layout.value}, {config.container}/{config.root_folder}")  # fmt: skip
    return 0
