"""A fresh process speaks the API version the engine gave an earlier one, without asking.

The engine here is a small HTTP server on 127.0.0.1 that answers docker-py's ``GET /version``
and image inspection, refusing API versions above its own as dockerd does, and records every
request: what a user would see as one round trip less per step, or a run that goes on when the
remembered version went stale.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipes_docker.dockerapi.api_version import ApiVersionMemory
from pipes_docker.dockerapi.containers import DockerEngine
from pipes_docker.dockerapi.endpoint import choose_endpoint

IMAGE_ID = "sha256:" + "ab" * 32


class FakeDaemon(ThreadingHTTPServer):
    def __init__(self, api_version: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.api_version = api_version
        self.paths: list[str] = []

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeDaemon

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        asked = re.match(r"/v(\d+\.\d+)/", self.path)
        if self.path == "/version":
            self._answer(200, {"ApiVersion": self.server.api_version, "Version": "20.10.0"})
        elif asked and _newer(asked.group(1), self.server.api_version):
            self._answer(
                400,
                {
                    "message": f"client version {asked.group(1)} is too new. Maximum"
                    f" supported API version is {self.server.api_version}"
                },
            )
        else:
            self._answer(200, {"Id": IMAGE_ID, "RepoDigests": []})

    def _answer(self, status: int, body: dict[str, str]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _newer(a: str, b: str) -> bool:
    return tuple(map(int, a.split("."))) > tuple(map(int, b.split(".")))


@pytest.fixture
def daemon(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeDaemon]:
    server = FakeDaemon("1.41")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    for name in ("DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DOCKER_HOST", server.url)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker-config"))
    yield server
    server.shutdown()
    server.server_close()


def inspect_in_a_new_process() -> str | None:
    engine = DockerEngine()
    try:
        return engine.image_id("job:latest")
    finally:
        engine.client.close()


def test_a_new_process_speaks_the_version_an_earlier_one_was_given(daemon: FakeDaemon) -> None:
    assert inspect_in_a_new_process() == IMAGE_ID
    assert daemon.paths == ["/version", "/v1.41/images/job:latest/json"]

    assert inspect_in_a_new_process() == IMAGE_ID
    assert daemon.paths[2:] == ["/v1.41/images/job:latest/json"]  # no /version this time


def test_a_version_the_engine_refuses_is_forgotten_and_the_call_goes_on(
    daemon: FakeDaemon,
) -> None:
    endpoint = choose_endpoint()
    ApiVersionMemory().store(endpoint, "1.45")  # an engine since replaced by an older one

    assert inspect_in_a_new_process() == IMAGE_ID

    assert daemon.paths == [
        "/v1.45/images/job:latest/json",  # refused: too new
        "/version",
        "/v1.41/images/job:latest/json",
    ]
    assert ApiVersionMemory().load(endpoint) == "1.41"


def test_a_version_is_remembered_per_engine_and_never_a_malformed_one(
    daemon: FakeDaemon, monkeypatch: pytest.MonkeyPatch
) -> None:
    memory = ApiVersionMemory()
    here = choose_endpoint()
    memory.store(here, "1.41")
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    elsewhere = choose_endpoint()
    assert memory.load(here) == "1.41"
    assert memory.load(elsewhere) is None
    memory.store(elsewhere, "latest; rm -rf")
    assert memory.load(elsewhere) is None
