"""The example dg project: container jobs as Dagster assets, declared in YAML (``defs/``)."""
