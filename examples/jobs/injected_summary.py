"""A Pipes job for an image that has Python but no dagster-pipes.

pipes-docker copies the orchestrator's dagster_pipes into the container (`inject_pipes=True`),
so this script imports it without the image being rebuilt.
"""

import platform

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    pipes.log.info("summarizing the platform")
    pipes.report_asset_materialization(
        metadata={
            "python_version": platform.python_version(),
            "machine": platform.machine(),
        }
    )
