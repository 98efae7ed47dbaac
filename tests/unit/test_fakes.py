"""The in-memory engines must keep matching the seams they stand in for, or the unit tests lie."""

from __future__ import annotations

import inspect

from pipes_docker.container.engine import ContainerEngine
from pipes_docker.dockerapi.containers import DockerEngine
from pipes_docker.dockerapi.services import DockerSwarmEngine
from pipes_docker.swarm.engine import SwarmEngine

from .fakes import FakeEngine
from .swarm_fakes import FakeSwarmEngine


def operations(cls: type) -> dict[str, list[str]]:
    """Public methods and their parameters, inherited ones included (nearest definition wins)."""
    members: dict[str, object] = {}
    for klass in reversed(cls.__mro__[:-1]):  # all but object
        members.update(vars(klass))
    return {
        name: list(inspect.signature(member).parameters)
        for name, member in members.items()
        if not name.startswith("_") and callable(member)
    }


def test_fake_engine_has_every_operation_of_the_seam_with_the_same_parameters() -> None:
    seam = operations(ContainerEngine)
    fake = operations(FakeEngine)

    assert seam, "ContainerEngine lists no operations"
    for name, parameters in seam.items():
        assert fake.get(name) == parameters, f"FakeEngine.{name} differs from the seam"
    assert hasattr(FakeEngine(), "address")


def test_real_engine_has_the_same_operations_as_the_fake() -> None:
    real = operations(DockerEngine)

    for name, parameters in operations(ContainerEngine).items():
        assert real.get(name) == parameters, f"DockerEngine.{name} differs from the seam"


def test_fake_swarm_has_every_operation_of_the_swarm_seam_with_the_same_parameters() -> None:
    seam = operations(SwarmEngine)
    fake = operations(FakeSwarmEngine)

    assert seam, "SwarmEngine lists no operations"
    for name, parameters in seam.items():
        assert fake.get(name) == parameters, f"FakeSwarmEngine.{name} differs from the seam"
    assert FakeSwarmEngine().address


def test_real_swarm_engine_has_the_same_operations_as_the_fake() -> None:
    real = operations(DockerSwarmEngine)

    for name, parameters in operations(SwarmEngine).items():
        assert real.get(name) == parameters, f"DockerSwarmEngine.{name} differs from the seam"
