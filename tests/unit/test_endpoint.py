"""Which engine pipes-docker talks to when it makes the client: the ``docker`` CLI's order.

DOCKER_HOST, else DOCKER_CONTEXT, else the current context of the Docker config, else the local
socket. Contexts are written here in the layout ``docker context create`` writes (checked
against the real CLI in tests/integration/test_tls.py).
"""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import docker
import docker.context.config
import docker.errors
import pytest
import requests.exceptions

from pipes_docker import PipesDockerEngineError, PipesDockerTLSConfig
from pipes_docker.dockerapi.connection import DockerConnection, tls_failure
from pipes_docker.dockerapi.endpoint import DEFAULT_HOST, DockerEndpoint, choose_endpoint
from pipes_docker.retry import is_transient


def write_context(
    config_dir: Path, name: str, host: str, *, tls_files: tuple[str, ...] = ()
) -> Path:
    """A context as `docker context create NAME --docker host=HOST,ca=..,cert=..,key=..`."""
    context_id = docker.context.config.get_context_id(name)
    meta = config_dir / "contexts" / "meta" / context_id / "meta.json"
    meta.parent.mkdir(parents=True)
    endpoint = {"Host": host, "SkipTLSVerify": False}
    meta.write_text(json.dumps({"Name": name, "Metadata": {}, "Endpoints": {"docker": endpoint}}))
    tls_dir = config_dir / "contexts" / "tls" / context_id / "docker"
    if tls_files:
        tls_dir.mkdir(parents=True)
        for part in tls_files:
            (tls_dir / f"{part}.pem").write_text("not read by these tests\n")
    return tls_dir


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Docker config dir, and an environment that names no engine."""
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    config = tmp_path / "docker-config"
    config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    return config


def use_context(config_dir: Path, name: str) -> None:
    (config_dir / "config.json").write_text(json.dumps({"currentContext": name}))


def test_nothing_set_is_the_default_socket(config_dir: Path) -> None:
    endpoint = choose_endpoint()
    assert (endpoint.host, endpoint.source, endpoint.tls) == (DEFAULT_HOST, "default socket", None)


def test_the_current_context_of_the_docker_config_is_used(config_dir: Path) -> None:
    tls_dir = write_context(
        config_dir, "build-box", "tcp://10.1.2.3:2376", tls_files=("ca", "cert", "key")
    )
    use_context(config_dir, "build-box")

    endpoint = choose_endpoint()

    assert endpoint.host == "tcp://10.1.2.3:2376"
    assert endpoint.source == f"context build-box (current context in {config_dir}/config.json)"
    assert endpoint.tls is not None and endpoint.tls.verify
    assert endpoint.tls.cert_dir == str(tls_dir)
    assert (endpoint.tls.ca, endpoint.tls.cert, endpoint.tls.key) == tuple(
        str(tls_dir / f"{part}.pem") for part in ("ca", "cert", "key")
    )


def test_docker_context_wins_over_the_current_context(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_context(config_dir, "build-box", "tcp://10.1.2.3:2376")
    write_context(config_dir, "gpu-box", "ssh://deploy@gpu-box")
    use_context(config_dir, "build-box")
    monkeypatch.setenv("DOCKER_CONTEXT", "gpu-box")

    endpoint = choose_endpoint()

    assert (endpoint.host, endpoint.source) == (
        "ssh://deploy@gpu-box",
        "context gpu-box (DOCKER_CONTEXT)",
    )
    assert endpoint.address == "ssh://gpu-box"  # no user name in errors and metadata
    assert endpoint.tls is None


def test_docker_host_wins_over_any_context(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_context(config_dir, "build-box", "tcp://10.1.2.3:2376")
    use_context(config_dir, "build-box")
    monkeypatch.setenv("DOCKER_CONTEXT", "build-box")
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2376")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", "/certs")

    endpoint = choose_endpoint()

    assert (endpoint.host, endpoint.source) == ("tcp://127.0.0.1:2376", "env DOCKER_HOST")
    assert endpoint.tls is not None and endpoint.tls.verify
    assert (endpoint.tls.cert_dir, endpoint.tls.ca) == ("/certs", "/certs/ca.pem")


def test_the_default_context_is_the_local_socket(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_context(config_dir, "build-box")  # overridden below
    monkeypatch.setenv("DOCKER_CONTEXT", "default")
    assert choose_endpoint().host == DEFAULT_HOST


def test_a_context_that_does_not_exist_is_a_clear_error(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_context(config_dir, "gone-box")

    with pytest.raises(
        PipesDockerEngineError, match=r"Docker context 'gone-box' \(current context"
    ) as raised:
        choose_endpoint()
    assert not is_transient(raised.value)

    monkeypatch.setenv("DOCKER_CONTEXT", "typo-box")
    with pytest.raises(
        PipesDockerEngineError, match=r"'typo-box' \(DOCKER_CONTEXT\) does not exist"
    ):
        DockerConnection().client  # noqa: B018  # the client is made on first use


def test_a_missing_cert_file_fails_at_once_naming_the_engine_the_dir_and_the_file(
    config_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.pem").write_text("x")
    (certs / "cert.pem").write_text("x")
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:2376")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(certs))

    with pytest.raises(PipesDockerEngineError) as raised:
        DockerConnection().client  # noqa: B018

    assert not is_transient(raised.value)
    message = str(raised.value)
    assert "tcp://127.0.0.1:2376 (env DOCKER_HOST)" in message
    assert f"the cert dir {certs} has no key.pem" in message


def test_the_tls_config_stops_the_session_reading_the_environment_before_any_request(
    tmp_path: Path,
) -> None:
    # docker-py applies the TLS config in the client constructor, before it asks the engine
    # for its version: that order is what makes REQUESTS_CA_BUNDLE harmless. If a docker-py
    # release changes it, this fails (version= given: no engine is needed here).
    for part in ("ca", "cert", "key"):
        (tmp_path / f"{part}.pem").write_text("x")
    tls = PipesDockerTLSConfig(
        ca_cert=str(tmp_path / "ca.pem"),
        client_cert=(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")),
        verify=True,
    )
    api = docker.APIClient(base_url="tcp://127.0.0.1:1", tls=tls, version="1.41")
    assert api.trust_env is False
    assert api.verify == str(tmp_path / "ca.pem")
    assert api.base_url.startswith("https://")
    api.close()


def test_a_certificate_that_does_not_verify_is_found_behind_the_wrappers() -> None:
    verify_failure = ssl.SSLCertVerificationError(1, "certificate verify failed")
    verify_failure.verify_message = "certificate has expired"
    wrapped = requests.exceptions.SSLError(verify_failure)
    try:
        try:
            raise wrapped
        except requests.exceptions.SSLError as exc:
            raise docker.errors.DockerException(
                f"Error while fetching server API version: {exc}"
            ) from exc
    except docker.errors.DockerException as outer:
        assert tls_failure(outer) is verify_failure
    assert tls_failure(requests.exceptions.ConnectionError("refused")) is None


@pytest.mark.parametrize(
    ("host", "reads_environment"),
    [("unix:///var/run/docker.sock", False), ("tcp://127.0.0.1:2375", True)],
)
def test_a_socket_engine_is_reached_without_reading_proxies_from_the_environment(
    host: str, reads_environment: bool
) -> None:
    # Over a unix socket no proxy, CA bundle or netrc applies: the session skips looking on
    # every request. Over tcp the environment counts (HTTPS_PROXY), as for the docker CLI.
    client = DockerEndpoint(host, "test").connect(version="1.41")
    assert client.api.trust_env is reads_environment
    client.close()
