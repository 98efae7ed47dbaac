"""A backend's own keywords (``container_kwargs``, ``service_kwargs``): checked and merged.

Both backends take docker-py keywords from the client and from each run. A run's keyword wins,
except where adding up is what a user means (an environment, labels, lists of mounts or
constraints); keywords pipes-docker must control are refused. :class:`OptionRules` says which,
per backend.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pipes_docker.environment import environment_dict
from pipes_docker.errors import PipesDockerConfigError
from pipes_docker.values import frozen

__all__ = ["OptionRules"]


def _as_list(value: Any) -> list[Any]:
    return list(value or [])


@frozen
class OptionRules:
    """How one backend's keywords are checked and merged.

    Attributes:
        name: What the user calls them (``"container_kwargs"``).
        reserved: Keywords pipes-docker controls, and why (said when one is refused).
        env_key: The keyword holding the environment (a dict or ``KEY=VALUE`` list).
        mappings: Keywords whose dicts add up.
        lists: Keywords whose lists add up, each normalized by ``normalize`` when given.
    """

    name: str
    reserved: frozenset[str]
    why_reserved: str
    env_key: str
    mappings: Sequence[str] = ("labels",)
    lists: Sequence[str] = ()
    normalize: Callable[[Any], list[Any]] = _as_list

    def check(self, options: Mapping[str, Any]) -> None:
        """Raise :class:`PipesDockerConfigError` for a keyword pipes-docker must control."""
        refused = sorted(self.reserved & set(options))
        if refused:
            raise PipesDockerConfigError(
                f"{self.name} may not set {', '.join(refused)}: {self.why_reserved}"
                " Pass image and command to run() instead."
            )

    def merge(self, client: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
        """A run's keywords over the client's; the environment, mappings and lists add up."""
        merged = {**client, **run}
        both = set(client) & set(run)
        if self.env_key in both:
            merged[self.env_key] = {
                **environment_dict(client[self.env_key]),
                **environment_dict(run[self.env_key]),
            }
        for key in both.intersection(self.mappings):
            merged[key] = {**client[key], **run[key]}
        for key in both.intersection(self.lists):
            merged[key] = [*self.normalize(client[key]), *self.normalize(run[key])]
        return merged

    def pop_env(self, options: dict[str, Any]) -> Mapping[str, str]:
        """Take the environment out of ``options``, as a dict."""
        return environment_dict(options.pop(self.env_key, None) or {})
