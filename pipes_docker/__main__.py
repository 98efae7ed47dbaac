"""Command line: ``python -m pipes_docker vendor DEST_DIR``."""

from __future__ import annotations

import argparse
import sys

from pipes_docker.vendor import vendor_dagster_pipes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipes_docker")
    commands = parser.add_subparsers(dest="command", required=True)
    vendor = commands.add_parser(
        "vendor", help="copy the installed dagster_pipes package into a Docker build context"
    )
    vendor.add_argument("destination", help="directory to write dagster_pipes/ into")
    args = parser.parse_args(argv)
    if args.command == "vendor":
        target = vendor_dagster_pipes(args.destination)
        print(f"vendored dagster_pipes into {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
