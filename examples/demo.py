"""Materialize the example asset once and print what the container reported."""

from __future__ import annotations

import sys

from dagster import DagsterInstance, materialize

from examples.definitions import defs, word_counts


def main() -> int:
    resources = {"docker_pipes": defs.resources["docker_pipes"]}
    with DagsterInstance.ephemeral() as instance:
        result = materialize([word_counts], resources=resources, instance=instance)
    if not result.success:
        print("materialization failed", file=sys.stderr)
        return 1
    (materialization,) = result.asset_materializations_for_node("word_counts")
    print(f"\nMaterialized {materialization.asset_key.to_user_string()} with metadata:")
    for key, value in sorted(materialization.metadata.items()):
        print(f"  {key}: {value.value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
