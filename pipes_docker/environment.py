"""A job's environment: layers merged in order, the Pipes bootstrap variables over all, and
what is injected into the job (an installed ``dagster_pipes``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dagster import EnvVar

from pipes_docker.backend import ContainerFile
from pipes_docker.errors import PipesDockerConfigError
from pipes_docker.values import frozen
from pipes_docker.vendor import installed_dagster_pipes_dir, package_files

__all__ = [
    "INJECT_PATH",
    "Injection",
    "environment_dict",
    "inject_dagster_pipes",
    "merge_env",
    "resolve_env_vars",
]

# Where an injected dagster_pipes appears in the job (inject_pipes=True).
INJECT_PATH = "/opt/pipes-docker/inject"


@frozen
class Injection:
    """What injecting something into a job takes: variables and files."""

    env: Mapping[str, str]
    files: Sequence[ContainerFile]


def environment_dict(environment: Any) -> dict[str, str]:
    """docker-py takes an environment as a dict or a list of ``KEY=VALUE`` strings."""
    if isinstance(environment, Mapping):
        # An EnvVar is a str: kept as is for resolve_env_vars (str() on it raises).
        return {str(k): v if isinstance(v, str) else str(v) for k, v in environment.items()}
    return {key: value for key, _, value in (str(item).partition("=") for item in environment)}


def resolve_env_vars(layer: Mapping[str, str], where: str) -> dict[str, str]:
    """``layer`` with each ``dagster.EnvVar`` value replaced by its variable's value.

    Resolved when the run starts, in the process that runs it, as Dagster resolves an
    ``EnvVar`` in a configurable resource's config: a code location loads without the secret,
    and the run reads it where it runs.

    Raises:
        PipesDockerConfigError: A variable is not set; the message names the key and the
            variable (never a value).
    """
    resolved: dict[str, str] = {}
    for key, value in layer.items():
        if isinstance(value, EnvVar):
            found = value.get_value()
            if found is None:
                raise PipesDockerConfigError(
                    f"{where}[{key!r}] is EnvVar({value.env_var_name!r}), but the environment"
                    f" variable {value.env_var_name} is not set in the process that runs this"
                    " step. Set it there, or pass a plain value."
                )
            resolved[key] = found
        else:
            resolved[key] = value
    return resolved


def merge_env(
    env_layers: Sequence[Mapping[str, str]], bootstrap_env: Mapping[str, str]
) -> dict[str, str]:
    """The layers in order, each over the last, and the Pipes bootstrap variables over all."""
    env: dict[str, str] = {}
    for layer in env_layers:
        env.update(layer)
    env.update(bootstrap_env)  # last: a user's env must not break the protocol
    return env


def inject_dagster_pipes(
    image_env: Mapping[str, str], env_layers: Sequence[Mapping[str, str]]
) -> Injection:
    """Copy the installed dagster_pipes into the job and put it first on PYTHONPATH.

    Copied, not bind-mounted, so injection works on engines that do not share our files (and
    on Swarm, as configs). The PYTHONPATH already in force (the user's env, else the image's) is
    kept after ours.
    """
    pythonpath = image_env.get("PYTHONPATH", "")
    for layer in env_layers:
        pythonpath = layer.get("PYTHONPATH", pythonpath)
    package = installed_dagster_pipes_dir()
    return Injection(
        env={"PYTHONPATH": ":".join(p for p in (INJECT_PATH, pythonpath) if p)},
        files=[
            ContainerFile(f"{INJECT_PATH}/{package.name}/{path.name}", path.read_bytes())
            for path in package_files(package)
        ],
    )
