"""A Pipes job for the dagster-docker drop-in test: writes multiplier * 3 under storage_root.

Baked into a test image at numbers_example/number_x.py (see test_dagster_docker_dropin.py).
"""

import os

from dagster_pipes import open_dagster_pipes

with open_dagster_pipes() as pipes:
    root = pipes.get_extra("storage_root")
    path = os.path.join(root, "number_x")
    with open(path, "w") as file:
        file.write(str(int(pipes.get_extra("multiplier")) * 3))
    pipes.report_asset_materialization(metadata={"path": path})
