"""Command line: ``python -m pipes_docker`` (or ``pipes-docker``) ``vendor`` and ``sweep``."""

from __future__ import annotations

import argparse
import os
import sys
from datetime import timedelta

from pipes_docker.vendor import vendor_dagster_pipes


def main(argv: list[str] | None = None) -> int:
    invoked = os.path.basename(sys.argv[0])
    parser = argparse.ArgumentParser(
        prog=invoked if invoked == "pipes-docker" else "python -m pipes_docker"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    vendor = commands.add_parser(
        "vendor", help="copy the installed dagster_pipes package into a Docker build context"
    )
    vendor.add_argument("destination", help="directory to write dagster_pipes/ into")
    sweep = commands.add_parser(
        "sweep",
        help="remove what orchestrators that died mid-run left behind",
        description=(
            "Remove the containers (and, with --swarm, the Swarm services and configs) that"
            " orchestrators which died mid-run left on the engine DOCKER_HOST names, and their"
            " temp dirs on this host. Something is orphaned when the orchestrator that made it"
            " ran on this host and its process is gone, or when it is older than --older-than"
            " (orchestrators on other hosts). A temp dir goes once no job of its orchestrator is"
            " left to adopt. Run it from a schedule or at startup."
        ),
    )
    sweep.add_argument(
        "--dry-run", action="store_true", help="list what would be removed; remove nothing"
    )
    sweep.add_argument(
        "--older-than",
        type=float,
        default=6.0,
        metavar="HOURS",
        help="age after which anything of ours is orphaned whoever made it (default: 6)",
    )
    sweep.add_argument(
        "--swarm", action="store_true", help="also sweep Swarm services and configs (a manager)"
    )
    sweep.add_argument(
        "--temp-dir-root",
        action="append",
        metavar="DIR",
        help="where runs make temp dirs (temp_dir_root); repeatable; default: the system's",
    )
    args = parser.parse_args(argv)
    if args.command == "vendor":
        target = vendor_dagster_pipes(args.destination)
        print(f"vendored dagster_pipes into {target}")
        return 0
    from pipes_docker.cleanup import sweep_everything
    from pipes_docker.errors import PipesDockerError

    if args.older_than < 0:
        parser.error("--older-than must not be negative")
    try:
        found = sweep_everything(
            older_than=timedelta(hours=args.older_than),
            swarm=args.swarm,
            temp_dir_roots=args.temp_dir_root or [None],
            dry_run=args.dry_run,
        )
    except PipesDockerError as exc:
        print(f"pipes-docker sweep: {exc}", file=sys.stderr)
        return 1
    for item in found:
        print(f"{'would remove' if args.dry_run else 'removed'} {item}")
    if not found:
        summary = "nothing orphaned found"
    else:
        summary = (
            f"{len(found)} orphaned, {'removed nothing (dry run)' if args.dry_run else 'removed'}"
        )
    print(summary, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
