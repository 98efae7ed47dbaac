"""Images: make sure a run's image is on the engine, as the client's pull policy says."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, Protocol

from pipes_docker.environment import resolve_env_vars
from pipes_docker.errors import PipesDockerConfigError, PipesDockerImageError

__all__ = ["PullPolicy", "check_pull_policy", "ensure_image", "registry_auth"]

PullPolicy = Literal["if_not_present", "always", "never"]


class _Images(Protocol):
    @property
    def address(self) -> str: ...

    def image_id(self, image: str) -> str | None: ...

    def pull(self, image: str, auth: Mapping[str, str] | None) -> None: ...


def check_pull_policy(policy: str) -> PullPolicy:
    if policy not in ("if_not_present", "always", "never"):
        raise PipesDockerConfigError(
            f"pull_policy must be 'if_not_present', 'always' or 'never', got {policy!r}"
        )
    return policy  # type: ignore[return-value]


def ensure_image(
    engine: _Images, image: str, policy: PullPolicy, auth: Mapping[str, str] | None
) -> str:
    """Pull ``image`` as ``policy`` says; return its id on the engine.

    Raises:
        PipesDockerImageError: It is missing and may not be pulled, or the pull failed.
    """
    if policy == "always":
        engine.pull(image, auth)
    else:
        present = engine.image_id(image)
        if present is not None:
            return present
        if policy == "never":
            raise PipesDockerImageError(
                f"Image {image!r} is not present on the Docker engine at {engine.address} and"
                " pull_policy is 'never'. Build or pull it first, or use"
                " pull_policy='if_not_present'.",
                image=image,
            )
        engine.pull(image, auth)
    pulled = engine.image_id(image)
    if pulled is None:
        raise PipesDockerImageError(
            f"Image {image!r} is still missing on the Docker engine at {engine.address} after"
            " pulling it.",
            image=image,
        )
    return pulled


def registry_auth(registry: Mapping[str, str] | None) -> Mapping[str, str] | None:
    """docker-py's ``auth_config`` from ``{"url", "username", "password"}``."""
    if not registry:
        return None
    registry = resolve_env_vars(registry, "registry")
    missing = [key for key in ("username", "password") if key not in registry]
    if missing:
        raise PipesDockerConfigError(
            f"registry needs {' and '.join(missing)} (it takes url, username and password);"
            f" it has {', '.join(sorted(registry)) or 'nothing'}."
        )
    auth = {"username": registry["username"], "password": registry["password"]}
    if "url" in registry:
        auth["serveraddress"] = registry["url"]
    return auth
