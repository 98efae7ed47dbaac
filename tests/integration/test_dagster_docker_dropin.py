"""dagster-docker's own Pipes test usage, with only the import changed, against our images.

``dagster_docker_tests/test_pipes.py`` (dagster-docker 0.29.x) runs ``python -m
numbers_example.number_x`` from a test project image, with ``PYTHONPATH`` set by ``env`` or by
``container_kwargs["environment"]``, ``extras``, ``registry`` per run, bind mounts in
``container_kwargs["volumes"]`` and dagster's own ``PipesFileContextInjector``. A user moving
from dagster-docker must get the same results by changing one import; these tests do exactly
that (the registry is ``None``: no registry can be reached here).
"""

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from dagster import AssetExecutionContext, asset, materialize
from dagster._core.pipes.utils import PipesFileContextInjector

from pipes_docker import PipesDockerClient  # the one changed line: was dagster_docker.pipes

from .conftest import TEST_IMAGE

DROPIN_IMAGE = "pipes-docker-dropin-test:latest"

# dagster_pipes in site-packages (the reference overrides PYTHONPATH), the job where the
# reference test project has it.
DOCKERFILE = f"""FROM {TEST_IMAGE}
RUN cp -R /opt/pipes/dagster_pipes "$(python -c 'import site; print(site.getsitepackages()[0])')/"
COPY number_x.py /dagster_test/toys/external_execution/numbers_example/number_x.py
RUN touch /dagster_test/toys/external_execution/numbers_example/__init__.py
"""


@pytest.fixture(scope="module")
def docker_image(docker_client: docker.DockerClient) -> Iterator[str]:
    with tempfile.TemporaryDirectory() as context:
        Path(context, "Dockerfile").write_text(DOCKERFILE)
        source = Path(__file__).parent / "dropin" / "number_x.py"
        Path(context, "number_x.py").write_text(source.read_text())
        docker_client.images.build(
            path=context, tag=DROPIN_IMAGE, network_mode="none", rm=True, forcerm=True
        )
    yield DROPIN_IMAGE
    docker_client.images.remove(DROPIN_IMAGE, force=True)


def test_default(docker_image: str) -> None:
    ext_config: dict[str, object] = {}

    @asset
    def number_x(
        context: AssetExecutionContext,
        pipes_docker_client: PipesDockerClient,
    ):  # type: ignore[no-untyped-def]
        return pipes_docker_client.run(
            image=docker_image,
            command=[
                "python",
                "-m",
                "numbers_example.number_x",
            ],
            context=context,
            extras={"storage_root": "/tmp/", "multiplier": 2},
            env={"PYTHONPATH": "/dagster_test/toys/external_execution/"},
        ).get_results()

    result = materialize(
        [number_x],
        resources={"pipes_docker_client": PipesDockerClient(**ext_config)},
        raise_on_error=False,
    )
    assert result.success
    mats = result.asset_materializations_for_node(number_x.op.name)
    assert mats[0].metadata["path"]


def test_file_io(docker_image: str) -> None:
    registry = None

    with tempfile.TemporaryDirectory() as tempdir:
        # The job (root in the container) writes into these bind mounts.
        os.chmod(tempdir, 0o777)

        @asset
        def number_x(
            context: AssetExecutionContext,
            pipes_docker_client: PipesDockerClient,
        ):  # type: ignore[no-untyped-def]
            instance_storage = context.instance.storage_directory()
            host_storage = os.path.join(instance_storage, "number_example")
            os.makedirs(host_storage, exist_ok=True)

            container_storage = "/mnt/asset_storage/"

            volumes = {
                host_storage: {
                    "bind": container_storage,
                    "mode": "rw",
                },
                tempdir: {
                    "bind": tempdir,
                    "mode": "rw",
                },
            }

            return pipes_docker_client.run(
                image=docker_image,
                command=[
                    "python",
                    "-m",
                    "numbers_example.number_x",
                ],
                registry=registry,
                context=context,
                extras={"storage_root": container_storage, "multiplier": 2},
                container_kwargs={
                    "environment": {"PYTHONPATH": "/dagster_test/toys/external_execution/"},
                    "volumes": volumes,
                },
            ).get_results()

        result = materialize(
            [number_x],
            resources={
                "pipes_docker_client": PipesDockerClient(
                    context_injector=PipesFileContextInjector(os.path.join(tempdir, "context")),
                )
            },
            raise_on_error=False,
        )
        assert result.success
        mats = result.asset_materializations_for_node(number_x.op.name)
        assert mats[0].metadata["path"]
        # What the job wrote reached the host through the bind mount.
        assert Path(mats[0].metadata["path"].value).name == "number_x"
