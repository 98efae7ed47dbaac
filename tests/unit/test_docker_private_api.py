"""The private docker-py API pipes-docker relies on (``pipes_docker/dockerapi/private.py``) is
still there, with the shape we use.

docker-py may change a ``_``-name in any release. When one of these tests fails after an upgrade,
adapt ``private.py`` (or find a public way) before widening the pin in ``pyproject.toml``.
"""

from __future__ import annotations

import http.client
import inspect
import socket
from collections.abc import Iterator
from typing import Any

import docker
import docker.errors
import docker.models.containers
import docker.models.services
import docker.types
import pytest
import requests
import urllib3

from pipes_docker.dockerapi import private


def parameters(function: Any) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.fixture
def api() -> docker.APIClient:
    # An explicit version: the client asks the engine for nothing (no daemon needed).
    return docker.APIClient(base_url="unix:///nonexistent/docker.sock", version="1.41")


def test_the_private_names_exist_with_the_parameters_we_pass() -> None:
    assert parameters(docker.models.containers._create_container_args) == ["kwargs"]
    assert parameters(docker.models.services._get_create_service_kwargs) == [
        "func_name",
        "kwargs",
    ]
    assert callable(docker.APIClient._get)  # (self, *args, **kwargs): a header decorator wraps it
    assert parameters(docker.APIClient._url)[:2] == ["self", "pathfmt"]
    assert parameters(docker.APIClient._stream_helper) == ["self", "response", "decode"]
    assert parameters(docker.APIClient._raise_for_status) == ["self", "response"]


def test_container_create_keywords_become_the_low_level_arguments() -> None:
    arguments = private.container_create_arguments(
        {
            "image": "job:1",
            "command": ["python", "job.py"],
            "name": "pipes-x",
            "environment": {"A": "1"},
            "labels": {"io.pipes-docker.managed": "true"},
            "volumes": ["/host:/dagster-pipes:rw"],
            "detach": True,
            "version": "1.41",
            "mem_limit": "64m",
        }
    )

    assert arguments["image"] == "job:1"
    assert arguments["command"] == ["python", "job.py"]
    assert arguments["name"] == "pipes-x"
    assert arguments["environment"] == {"A": "1"}
    assert arguments["labels"] == {"io.pipes-docker.managed": "true"}
    assert arguments["host_config"]["Binds"] == ["/host:/dagster-pipes:rw"]
    assert arguments["host_config"]["Memory"] == 64 * 1024 * 1024
    # Every argument is one the public low-level call takes.
    create = inspect.signature(docker.APIClient.create_container).parameters
    assert set(arguments) <= set(create)


def test_an_unknown_container_keyword_is_a_type_error() -> None:
    # DockerEngine.create turns this TypeError into an error naming container_kwargs.
    with pytest.raises(TypeError):
        private.container_create_arguments({"image": "job:1", "no_such_option": 1})


def test_service_create_keywords_become_the_low_level_arguments() -> None:
    arguments = private.service_create_arguments(
        {
            "image": "job:1",
            "name": "pipes-run",
            "env": ["A=1"],
            "labels": {"io.pipes-docker.managed": "true"},
            "container_labels": {"io.pipes-docker.managed": "true"},
            "mode": docker.types.ServiceMode("replicated-job", replicas=1),
            "restart_policy": docker.types.RestartPolicy(condition="none"),
            "args": ["python", "job.py"],
            "init": True,
            "configs": [docker.types.ConfigReference("cfg1", "pipes-c", filename="/ctx.json")],
        }
    )

    container = arguments["task_template"]["ContainerSpec"]
    assert arguments["name"] == "pipes-run"
    assert arguments["labels"] == {"io.pipes-docker.managed": "true"}
    assert arguments["mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}
    assert (container["Image"], container["Args"], container["Env"]) == (
        "job:1",
        ["python", "job.py"],
        ["A=1"],
    )
    assert container["Init"] is True
    assert container["Configs"][0]["ConfigID"] == "cfg1"
    create = inspect.signature(docker.APIClient.create_service).parameters
    assert set(arguments) <= set(create)


def test_an_unknown_service_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        private.service_create_arguments({"image": "job:1", "no_such_option": 1})


def test_a_streamed_get_goes_to_the_versioned_url_with_our_options(
    api: docker.APIClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(api, "get", lambda url, **kwargs: sent.append((url, kwargs)) or "answer")

    answer = private.get_streamed(
        api, "/containers/{0}/logs", "a b", params={"follow": 1}, timeout=None
    )

    assert answer == "answer"
    ((url, kwargs),) = sent
    assert url == "http+docker://localhost/v1.41/containers/a%20b/logs"  # the id quoted
    assert kwargs["params"] == {"follow": 1}
    assert kwargs["stream"] is True
    assert kwargs["timeout"] is None  # a followed stream must not time out


def test_a_failed_status_becomes_docker_pys_own_error(api: docker.APIClient) -> None:
    response = requests.Response()
    response.status_code = 404
    response._content = b'{"message": "No such container: x"}'

    with pytest.raises(docker.errors.NotFound):
        private.raise_for_status(api, response)


@pytest.fixture
def chunked_response() -> Iterator[tuple[requests.Response, socket.socket]]:
    """A streamed ``requests`` response read from a real socket, as docker-py builds one."""
    ours, theirs = socket.socketpair()
    body = b'{"n": 1}\n{"n": 2}\n'
    theirs.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        + f"{len(body):x}\r\n".encode()
        + body
        + b"\r\n0\r\n\r\n"
    )
    http_response = http.client.HTTPResponse(ours)
    http_response.begin()
    response = requests.Response()
    response.status_code = 200
    response.raw = urllib3.HTTPResponse(
        body=http_response, preload_content=False, original_response=http_response
    )
    try:
        yield response, ours
    finally:
        response.close()
        ours.close()
        theirs.close()


def test_the_stream_helper_decodes_a_chunked_json_stream(
    api: docker.APIClient, chunked_response: tuple[requests.Response, socket.socket]
) -> None:
    response, _ = chunked_response

    assert list(private.decoded_json_stream(api, response)) == [{"n": 1}, {"n": 2}]


def test_the_socket_under_a_streamed_response_is_found(
    chunked_response: tuple[requests.Response, socket.socket],
) -> None:
    # Without it, closing a response another thread reads would block (see shutdown_response).
    response, sock = chunked_response

    assert private.response_socket(response) is sock


def test_the_socket_under_an_attach_wrapper_is_found() -> None:
    ours, theirs = socket.socketpair()
    try:
        wrapper = socket.SocketIO(ours, "rb")
        assert private.attach_socket(wrapper) is ours
        assert private.attach_socket(ours) is ours  # a transport that gives the socket itself
    finally:
        ours.close()
        theirs.close()


def test_docker_py_keeps_the_attach_response_on_the_socket_it_returns() -> None:
    # private.attach_response reads it: on TLS engines closing it is what frees the socket.
    source = inspect.getsource(docker.APIClient._get_raw_response_socket)
    assert "sock._response = response" in source

    class Raw:
        _response = "the response"

    assert private.attach_response(Raw()) == "the response"
    assert private.attach_response(object()) is None
