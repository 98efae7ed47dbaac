"""Which Docker engine to talk to, chosen as the ``docker`` CLI chooses it, and the client for it.

Order (the CLI's): ``DOCKER_HOST`` (with ``DOCKER_TLS_VERIFY``/``DOCKER_CERT_PATH``), else the
context named by ``DOCKER_CONTEXT``, else the ``currentContext`` of the Docker config
(``$DOCKER_CONFIG/config.json``, default ``~/.docker``), else the local socket.

docker-py has a context API, and its parts are used here (``Context`` reads a context's
endpoints, ``get_context_id`` names its dirs), but not its lookup: ``ContextAPI`` finds the
contexts dir next to the config *file*, so under a ``DOCKER_CONFIG`` dir that has contexts but no
``config.json`` (what ``docker context create`` leaves) it looks in ``~/.docker`` instead, and
``kwargs_from_context`` falls back to the local socket when the named context does not exist:
the run would land on another engine than the one the user chose.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import docker
import docker.context
import docker.context.config
import docker.errors
import docker.tls

from pipes_docker.errors import PipesDockerEngineError
from pipes_docker.values import frozen

__all__ = [
    "DEFAULT_HOST",
    "DockerEndpoint",
    "PipesDockerTLSConfig",
    "TlsMaterial",
    "choose_endpoint",
]

DEFAULT_HOST = "unix:///var/run/docker.sock"


class PipesDockerTLSConfig(docker.tls.TLSConfig):  # type: ignore[misc]  # docker-py is untyped
    """docker-py's ``TLSConfig`` that keeps its CA whatever ``REQUESTS_CA_BUNDLE`` and
    ``CURL_CA_BUNDLE`` say.

    requests lets those variables replace the CA set on a session, so an engine with a private
    CA fails to verify on machines that set them (many do: Debian and Nix images, conda,
    corporate setups). docker-py's client constructor applies the TLS config and *then* asks the
    engine for its API version, so the session must stop reading the environment here, in
    ``configure_client``; setting ``trust_env`` after the constructor is too late. The session
    then also ignores ``HTTPS_PROXY``: the engine is reached directly.
    """

    def configure_client(self, client: Any) -> None:
        super().configure_client(client)
        client.trust_env = False


@frozen
class TlsMaterial:
    """The TLS files for an engine: a CA to verify it, a client certificate and key."""

    cert_dir: str
    ca: str | None
    cert: str | None
    key: str | None
    verify: bool

    def config(self) -> PipesDockerTLSConfig:
        client_cert = (self.cert, self.key) if self.cert and self.key else None
        return PipesDockerTLSConfig(
            client_cert=client_cert, ca_cert=self.ca, verify=self.verify or None
        )


@frozen
class DockerEndpoint:
    """A chosen engine: its host URL, how it was chosen, its TLS material."""

    host: str
    source: str
    tls: TlsMaterial | None = None

    @property
    def address(self) -> str:
        """The host without credentials (``ssh://user:secret@host`` -> ``ssh://host``)."""
        return without_credentials(self.host)

    def check_files(self) -> None:
        """Fail now, naming what is missing, if a TLS file is not there.

        Raises:
            PipesDockerEngineError: not transient: a missing file does not come back by itself.
        """
        if self.tls is None:
            return
        names = ("ca", "cert", "key")
        missing = [
            Path(path).name
            for path in (getattr(self.tls, name) for name in names)
            if path and not os.path.isfile(path)
        ]
        if missing:
            raise PipesDockerEngineError(
                f"Cannot use TLS with the Docker engine at {self.address} ({self.source}):"
                f" the cert dir {self.tls.cert_dir} has no {', '.join(missing)}."
                " Put the engine's CA (ca.pem) and your client certificate and key (cert.pem,"
                " key.pem) there."
            )

    def connect(self, **kwargs: Any) -> docker.DockerClient:
        """A docker-py client for this engine (it asks the engine for its API version).

        Over a unix socket or ssh no HTTP proxy, CA bundle or netrc applies, so the session
        stops looking for them in the environment and home dir on every request (about 0.15 ms
        of CPU each, several per run). Over tcp the environment still counts, as for the CLI.
        """
        self.check_files()
        tls = self.tls.config() if self.tls is not None else False
        client = docker.DockerClient(base_url=self.host, tls=tls, **kwargs)
        if self.host.startswith(("unix://", "ssh://", "npipe://")):
            client.api.trust_env = False
        return client


def choose_endpoint(environ: Mapping[str, str] | None = None) -> DockerEndpoint:
    """The engine the ``docker`` CLI would talk to in this environment.

    Raises:
        PipesDockerEngineError: the chosen context does not exist or cannot be read.
    """
    env = os.environ if environ is None else environ
    host = env.get("DOCKER_HOST")
    if host:
        return DockerEndpoint(host, "env DOCKER_HOST", _tls_from_env(env))
    config_dir = Path(env.get("DOCKER_CONFIG") or Path.home() / ".docker")
    name = env.get("DOCKER_CONTEXT")
    how = "DOCKER_CONTEXT"
    if not name:
        name = _current_context(config_dir / "config.json")
        how = f"current context in {config_dir / 'config.json'}"
    if not name or name == "default":
        return DockerEndpoint(DEFAULT_HOST, "default socket")
    return _load_context(config_dir, name, how)


def _tls_from_env(env: Mapping[str, str]) -> TlsMaterial | None:
    # docker-py's reading (kwargs_from_env): an empty DOCKER_TLS_VERIFY is off, a set
    # DOCKER_CERT_PATH turns TLS on without verifying; both default the dir to ~/.docker.
    verify = env.get("DOCKER_TLS_VERIFY") not in (None, "")
    cert_path = env.get("DOCKER_CERT_PATH") or None
    if not (verify or cert_path):
        return None
    cert_dir = cert_path or str(Path.home() / ".docker")
    return TlsMaterial(
        cert_dir=cert_dir,
        ca=os.path.join(cert_dir, "ca.pem") if verify else None,
        cert=os.path.join(cert_dir, "cert.pem"),
        key=os.path.join(cert_dir, "key.pem"),
        verify=verify,
    )


def _current_context(config_file: Path) -> str | None:
    if not config_file.is_file():
        return None
    try:
        config = json.loads(config_file.read_text())
    except (OSError, ValueError) as exc:
        raise PipesDockerEngineError(
            f"Cannot read the Docker config {config_file} to find the current context: {exc}"
        ) from exc
    name = config.get("currentContext") if isinstance(config, dict) else None
    return str(name) if name else None


def _load_context(config_dir: Path, name: str, how: str) -> DockerEndpoint:
    context_id = docker.context.config.get_context_id(name)
    meta_file = config_dir / "contexts" / "meta" / context_id / "meta.json"
    source = f"context {name} ({how})"
    if not meta_file.is_file():
        raise PipesDockerEngineError(
            f"The Docker context {name!r} ({how}) does not exist in {config_dir / 'contexts'}."
            " Create it (`docker context create`), choose another (`docker context ls`), or set"
            " DOCKER_HOST."
        )
    try:
        meta = json.loads(meta_file.read_text())
        context = docker.context.Context(name, endpoints=meta.get("Endpoints"))
    except (OSError, ValueError, AttributeError, docker.errors.ContextException) as exc:
        raise PipesDockerEngineError(
            f"Cannot read the Docker context {name!r} ({meta_file}): {exc}"
        ) from exc
    host = context.Host or DEFAULT_HOST
    endpoint = context.endpoints.get("docker") or {}
    tls_dir = config_dir / "contexts" / "tls" / context_id / "docker"
    files = {
        part: str(tls_dir / f"{part}.pem")
        for part in ("ca", "cert", "key")
        if (tls_dir / f"{part}.pem").is_file()
    }
    tls = None
    if files:
        tls = TlsMaterial(
            cert_dir=str(tls_dir),
            ca=files.get("ca"),
            cert=files.get("cert"),
            key=files.get("key"),
            verify=not endpoint.get("SkipTLSVerify", False),
        )
    return DockerEndpoint(host, source, tls)


def without_credentials(address: str) -> str:
    """``ssh://user:secret@host`` -> ``ssh://host``: addresses go into errors and metadata."""
    scheme, sep, rest = address.partition("://")
    if not sep:
        return address
    authority, slash, path = rest.partition("/")
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"
