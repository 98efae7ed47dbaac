"""Engines reached as the ``docker`` CLI reaches them: TLS with a private CA, and Docker contexts.

The TLS engine is the DinD image run here with ``dockerd --tlsverify`` and certificates made at
test time (tests/integration/tls.py), on tcp://127.0.0.1:PORT. This machine sets
``REQUESTS_CA_BUNDLE`` and ``CURL_CA_BUNDLE`` to the system bundle, as many do; each case that
could be hurt by them runs with them set to the system bundle and unset.

Contexts are made with the real ``docker`` CLI in a temp ``DOCKER_CONFIG``, pointing at the TLS
engine, at the compose DinD engine over tcp and over ssh, and chosen by ``DOCKER_CONTEXT`` or as
the current context (``docker context use``); the TLS one with the README's own commands.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import docker.errors
import pytest

from pipes_docker import (
    MANAGED_LABEL,
    PipesDockerClient,
    PipesDockerTLSConfig,
    wait_for_removals,
)

from .conftest import TEST_IMAGE, AssetRun
from .engines import (
    DIND_IMAGE,
    RemoteEngine,
    SshEngine,
    dind_container_kwargs,
    wait_until,
)
from .tls import Pki, make_pki

RunAsset = Callable[..., AssetRun]
ROOT = Path(__file__).resolve().parents[2]
SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
BUNDLE_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")
JOB = """
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.log.info("hello over the engine")
    print("job output", flush=True)
"""


@dataclass(frozen=True)
class TlsEngine:
    address: str
    port: int
    pki: Pki

    def client(self, cert_dir: Path | None = None) -> docker.DockerClient:
        certs = cert_dir or self.pki.client
        tls = PipesDockerTLSConfig(
            ca_cert=str(certs / "ca.pem"),
            client_cert=(str(certs / "cert.pem"), str(certs / "key.pem")),
            verify=True,
        )
        return docker.DockerClient(base_url=self.address, tls=tls, timeout=120)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def tls_engine(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TlsEngine]:
    """A DinD engine that accepts only TLS clients with a certificate from the test CA."""
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    port = free_port()
    kwargs = dind_container_kwargs(network_mode="host")
    kwargs["volumes"] = {**kwargs["volumes"], str(pki.server): {"bind": "/tls", "mode": "ro"}}
    container = docker_client.containers.run(
        DIND_IMAGE,
        command=[
            "--tlsverify",
            "--tlscacert=/tls/ca.pem",
            "--tlscert=/tls/server-cert.pem",
            "--tlskey=/tls/server-key.pem",
        ],
        environment={"DOCKER_PORT": str(port), "SSH_DIR": "/no-ssh"},
        labels={"io.pipes-docker.test": "tls-engine"},
        detach=True,
        **kwargs,
    )
    engine = TlsEngine(f"tcp://127.0.0.1:{port}", port, pki)

    def answers() -> bool:
        container.reload()
        if container.status == "exited":
            raise RuntimeError(f"the TLS engine exited: {container.logs(tail=20).decode()}")
        try:
            with contextlib.closing(engine.client()) as client:
                return bool(client.ping())
        except docker.errors.DockerException:
            return False

    try:
        wait_until(answers, 60, f"the TLS engine at {engine.address}")
        with contextlib.closing(engine.client()) as client:
            client.images.load(docker_client.images.get(TEST_IMAGE).save(named=TEST_IMAGE))
        yield engine
    finally:
        container.remove(force=True, v=True)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No engine named by the environment; an empty Docker config dir."""
    for name in ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    config = tmp_path / "docker-config"
    config.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    return monkeypatch


@pytest.fixture(params=["bundle-set", "bundle-unset"])
def bundle(request: pytest.FixtureRequest, clean_env: pytest.MonkeyPatch) -> str:
    for name in BUNDLE_VARIABLES:
        if request.param == "bundle-set":
            clean_env.setenv(name, SYSTEM_BUNDLE)
        else:
            clean_env.delenv(name, raising=False)
    return str(request.param)


def assert_ran_on(run: AssetRun, address: str, source: str) -> None:
    assert run.success, run.error
    assert "hello over the engine" in run.log_messages()
    assert run.metadata["pipes_docker/engine"] == address
    assert run.metadata["pipes_docker/engine_source"] == source


def no_managed_containers(client: docker.DockerClient) -> list[str]:
    assert wait_for_removals(timeout=120)  # a run that ended well removes in the background
    return [c.name for c in client.containers.list(all=True, filters={"label": MANAGED_LABEL})]


def docker_cli(*args: str) -> str:
    docker_bin = shutil.which("docker")
    assert docker_bin, "the docker CLI is needed (scripts/setup.sh installs it)"
    done = subprocess.run(
        [docker_bin, *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- TLS from the environment ------------------------------------------------------------------


def test_a_tls_engine_from_the_environment_runs_a_job(
    tls_engine: TlsEngine,
    bundle: str,
    clean_env: pytest.MonkeyPatch,
    run_asset: RunAsset,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clean_env.setenv("DOCKER_HOST", tls_engine.address)
    clean_env.setenv("DOCKER_TLS_VERIFY", "1")
    clean_env.setenv("DOCKER_CERT_PATH", str(tls_engine.pki.client))
    caplog.set_level(logging.DEBUG, logger="pipes_docker.dockerapi.connection")

    run = run_asset(PipesDockerClient(container_kwargs={"network_mode": "none"}), JOB)

    assert_ran_on(run, tls_engine.address, "env DOCKER_HOST")
    assert (
        f"Connecting to the Docker engine at {tls_engine.address} (chosen by env DOCKER_HOST)"
        in caplog.messages
    )
    with contextlib.closing(tls_engine.client()) as client:
        assert no_managed_containers(client) == []


def test_a_client_built_as_the_readme_says_works_where_docker_pys_own_tls_config_fails(
    tls_engine: TlsEngine, bundle: str, run_asset: RunAsset
) -> None:
    certs = tls_engine.pki.client
    plain = docker.tls.TLSConfig(
        ca_cert=str(certs / "ca.pem"),
        client_cert=(str(certs / "cert.pem"), str(certs / "key.pem")),
        verify=True,
    )
    if bundle == "bundle-set":  # the trap the README warns about is real here
        with pytest.raises(docker.errors.DockerException, match="CERTIFICATE_VERIFY_FAILED"):
            docker.DockerClient(base_url=tls_engine.address, tls=plain)

    client = PipesDockerClient(
        docker_client=tls_engine.client(), container_kwargs={"network_mode": "none"}
    )
    run = run_asset(client, JOB)

    assert_ran_on(run, tls_engine.address, "docker_client")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("wrong-ca", "the engine's certificate did not verify (unable to get local issuer"),
        ("name-mismatch", "the engine's certificate did not verify (Hostname mismatch"),
        ("foreign-client", "the engine refused the handshake"),
        ("missing-key", "has no key.pem"),
    ],
)
def test_certificates_that_do_not_verify_fail_at_once_saying_what(
    tls_engine: TlsEngine,
    bundle: str,
    clean_env: pytest.MonkeyPatch,
    run_asset: RunAsset,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    case: str,
    expected: str,
) -> None:
    pki = tls_engine.pki
    cert_dir = {"wrong-ca": pki.wrong_ca, "foreign-client": pki.foreign_client}.get(
        case, pki.client
    )
    host = tls_engine.address
    if case == "name-mismatch":  # the server certificate names 127.0.0.1 only
        host = f"tcp://localhost:{tls_engine.port}"
    if case == "missing-key":
        cert_dir = tmp_path / "certs"
        shutil.copytree(pki.client, cert_dir)
        (cert_dir / "key.pem").unlink()
    clean_env.setenv("DOCKER_HOST", host)
    clean_env.setenv("DOCKER_TLS_VERIFY", "1")
    clean_env.setenv("DOCKER_CERT_PATH", str(cert_dir))
    caplog.set_level(logging.WARNING, logger="pipes_docker.retry")

    run = run_asset(PipesDockerClient(container_kwargs={"network_mode": "none"}), JOB)

    assert not run.success
    assert f"Docker engine at {host} (env DOCKER_HOST)" in run.error
    assert str(cert_dir) in run.error
    assert expected in run.error
    assert not [m for m in caplog.messages if "retrying" in m]  # failed at once


# --- Docker contexts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """An engine a context can point at: the --docker value and what the run reports."""

    docker_option: str
    address: str


def readme_context_commands() -> list[str]:
    """The `docker context ...` lines of the README's "Remote engines" section."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### Remote engines") :]
    commands = [line for line in section.splitlines() if line.startswith("docker context ")]
    assert len(commands) == 2, commands
    return commands


@pytest.mark.parametrize("selected_by", ["DOCKER_CONTEXT", "current context"])
def test_a_tls_context_made_with_the_readme_commands_is_used(
    tls_engine: TlsEngine,
    bundle: str,
    clean_env: pytest.MonkeyPatch,
    run_asset: RunAsset,
    tmp_path: Path,
    selected_by: str,
) -> None:
    home = tmp_path / "home"
    shutil.copytree(tls_engine.pki.client, home / "certs")
    clean_env.setenv("HOME", str(home))
    create, use = readme_context_commands()
    create = create.replace("build-box:2376", f"127.0.0.1:{tls_engine.port}")
    docker_cli(*shlex.split(create.replace("$HOME", str(home)))[1:])
    config_file = clean_env_config(tmp_path) / "config.json"
    if selected_by == "DOCKER_CONTEXT":
        clean_env.setenv("DOCKER_CONTEXT", "build-box")
        source = "context build-box (DOCKER_CONTEXT)"
    else:
        docker_cli(*shlex.split(use)[1:])
        source = f"context build-box (current context in {config_file})"
    # The CLI itself now talks to the TLS engine: it holds the test image only (the host's more).
    listed = docker_cli("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").split()
    assert listed == [TEST_IMAGE]

    run = run_asset(PipesDockerClient(container_kwargs={"network_mode": "none"}), JOB)

    assert_ran_on(run, tls_engine.address, source)


def clean_env_config(tmp_path: Path) -> Path:
    return tmp_path / "docker-config"


@pytest.mark.parametrize("selected_by", ["DOCKER_CONTEXT", "current context"])
@pytest.mark.parametrize("transport", ["tcp", "ssh"])
def test_a_context_for_the_remote_engine_is_used(
    request: pytest.FixtureRequest,
    clean_env: pytest.MonkeyPatch,
    run_asset: RunAsset,
    tmp_path: Path,
    transport: str,
    selected_by: str,
) -> None:
    if transport == "ssh":
        engine: RemoteEngine = request.getfixturevalue("ssh_engine")
        assert isinstance(engine, SshEngine)
        clean_env.setenv("HOME", str(engine.home))  # the key, ssh config and known_hosts
        address = re.sub(r"//[^@]*@", "//", engine.address)
    else:
        engine = request.getfixturevalue("remote_engine")
        address = engine.address
    docker_cli("context", "create", "dind", "--docker", f"host={engine.address}")
    if selected_by == "DOCKER_CONTEXT":
        clean_env.setenv("DOCKER_CONTEXT", "dind")
        source = "context dind (DOCKER_CONTEXT)"
    else:
        docker_cli("context", "use", "dind")
        source = f"context dind (current context in {clean_env_config(tmp_path)}/config.json)"

    run = run_asset(PipesDockerClient(container_kwargs={"network_mode": "none"}), JOB)

    assert_ran_on(run, address, source)
    assert no_managed_containers(engine.client) == []


def test_a_context_that_does_not_exist_fails_naming_it(
    clean_env: pytest.MonkeyPatch, run_asset: RunAsset
) -> None:
    clean_env.setenv("DOCKER_CONTEXT", "no-such-box")

    run = run_asset(PipesDockerClient(container_kwargs={"network_mode": "none"}), JOB)

    assert not run.success
    assert "The Docker context 'no-such-box' (DOCKER_CONTEXT) does not exist" in run.error
