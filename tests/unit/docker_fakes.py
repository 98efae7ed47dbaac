"""The one fake docker-py client of the unit tests: a scripted low-level API.

``DockerEngine`` and ``DockerSwarmEngine`` are tested against it: each test gives the API
methods it expects to be called, as :class:`Script` objects that answer from a list.
"""

from collections.abc import Callable
from typing import Any

import docker.errors
import requests

__all__ = ["CREATED", "FakeDockerClient", "FakeDockerContainer", "Script", "api_error"]


def api_error(status: int, explanation: str) -> docker.errors.APIError:
    response = requests.Response()
    response.status_code = status
    return docker.errors.APIError(explanation, response=response, explanation=explanation)


class Script:
    """Answers calls from a list: an exception is raised, anything else is returned."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls = 0
        self.kwargs: list[dict[str, Any]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.kwargs.append(kwargs)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer() if callable(answer) else answer


class FakeDockerContainer:
    id = "c0ffee" * 10 + "beef"

    def __init__(self) -> None:
        self.attrs: dict[str, Any] = {"Image": "sha256:abc", "Config": {"Tty": False}}
        self.labels: dict[str, str] = {}


CREATED = {"Id": FakeDockerContainer.id, "Warnings": []}


class FakeDockerClient:
    def __init__(self, **api: Callable[..., Any]) -> None:
        methods = {name: staticmethod(method) for name, method in api.items()}
        api_attrs = {"base_url": "http+docker://fake", "api_version": "1.41", **methods}
        self.api = type("Api", (), api_attrs)()
        self.containers = type("Containers", (), {})()
        self.images = type("Images", (), {})()
