"""Materialize the example assets once and print the metadata each one reported."""

import sys

from dagster import DagsterInstance, materialize

from examples.definitions import (
    chunked_report,
    defs,
    legacy_export,
    legacy_report,
    platform_summary,
    shell_quality,
    word_counts,
)

ASSETS = [
    word_counts,
    legacy_report,
    platform_summary,
    chunked_report,
    legacy_export,
    shell_quality,
]


def main() -> int:
    resources = {name: defs.resources[name] for name in ("docker_pipes", "chunked_pipes")}
    with DagsterInstance.ephemeral() as instance:
        result = materialize(ASSETS, resources=resources, instance=instance)
    if not result.success:
        print("materialization failed", file=sys.stderr)
        return 1
    for assets_def in ASSETS:
        name = assets_def.key.to_user_string()
        (materialization,) = result.asset_materializations_for_node(name)
        print(f"\nMaterialized {name} with metadata:")
        for key, value in sorted(materialization.metadata.items()):
            print(f"  {key}: {value.value}")
    for check in result.get_asset_check_evaluations():
        outcome = "passed" if check.passed else "failed"
        print(f"\nCheck {check.check_name} on {check.asset_key.to_user_string()}: {outcome}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
