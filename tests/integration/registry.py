"""A tiny Docker Registry HTTP API v2 server on loopback, for the pull tests.

It serves one real image, made from ``docker save`` of the test image: the saved config and
layer tars become blobs (``docker save`` writes each layer as the uncompressed tar whose sha256
is its diff id, so it is served as is, with media type ``...rootfs.diff.tar``), and a schema2
manifest names them. Each server adds one tiny layer of its own holding a random token, so its
image has an id of its own: it is truly absent from the engine until pulled, and its top layer
is always downloaded (the engine skips layers it already has).

The engine treats registries on 127.0.0.0/8 as insecure: it tries TLS first, gets an HTTP answer
and falls back to plain HTTP. So every pull also shows one garbled request in the log.

Knobs, settable while the server runs:

* ``credentials``: require HTTP Basic auth (401 with ``WWW-Authenticate: Basic`` otherwise).
* ``manifest_missing``: answer every manifest request 404 ``MANIFEST_UNKNOWN``.
* ``blob_failures``: per blob digest, ``"500"`` (an internal server error) or ``"corrupt"``
  (the right length, the wrong bytes).

Only the read side of the API is implemented (``/v2/``, manifests and blobs, GET and HEAD).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import hashlib
import io
import json
import re
import secrets
import socket
import tarfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import urlsplit

import docker
import docker.errors
import pytest

from .conftest import BASE_IMAGE, EXAMPLE_IMAGE, TEST_IMAGE

__all__ = [
    "BlobSource",
    "RegistryRequest",
    "RegistryServer",
    "SavedImage",
    "ServedImage",
    "registry_fixture",
    "remove_pulled_images",
    "save_image",
    "saved_test_image_fixture",
    "unique_image",
]

MANIFEST_V2 = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_V1 = "application/vnd.docker.container.image.v1+json"
LAYER_TAR = "application/vnd.docker.image.rootfs.diff.tar"
REALM = "pipes-docker-test-registry"
NONCE_PATH = "/pipes-test-registry-nonce"

REPOSITORY = "pipes-test/job"
TAG = "1"

BlobFailure = Literal["500", "corrupt"]

_CHUNK = 1 << 20
_FLIP = bytes(b ^ 0x5A for b in range(256))  # corrupts every byte, keeps the length
# /v2/<name>/<manifests|blobs>/<reference>; <name> is path components of [a-z0-9] runs
# joined by separators, as the distribution spec's grammar has it.
_ROUTE = re.compile(
    r"^/v2/(?P<name>[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"/(?P<kind>manifests|blobs)/(?P<reference>[^/]+)$"
)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BlobSource:
    """A blob's bytes: in memory, or a slice of a file (a layer inside the saved tarball)."""

    digest: str
    size: int
    data: bytes | None = None
    path: Path | None = None
    offset: int = 0

    def chunks(self) -> Iterator[bytes]:
        if self.data is not None:
            for start in range(0, len(self.data), _CHUNK):
                yield self.data[start : start + _CHUNK]
            return
        assert self.path is not None
        remaining = self.size
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            while remaining > 0:
                chunk = f.read(min(_CHUNK, remaining))
                if not chunk:
                    raise OSError(f"{self.path} ended early while reading blob {self.digest}")
                remaining -= len(chunk)
                yield chunk


@dataclass(frozen=True)
class SavedImage:
    """``docker save`` of one local image, parsed: its config and its layers as blobs."""

    tar_path: Path
    config: Mapping[str, Any]
    layers: tuple[BlobSource, ...]


@dataclass(frozen=True)
class ServedImage:
    """The image one server serves: a manifest, a config and layers, all content-addressed."""

    repository: str
    tag: str
    token: str
    manifest: bytes
    manifest_digest: str
    config_digest: str
    layer_digests: tuple[str, ...]
    blobs: Mapping[str, BlobSource]

    @property
    def nonce_layer_digest(self) -> str:
        return self.layer_digests[-1]


@dataclass(frozen=True)
class RegistryRequest:
    """One request the server answered. Never holds the credentials."""

    method: str
    path: str
    authorized: bool
    status: int = 0

    @property
    def is_manifest(self) -> bool:
        return "/manifests/" in self.path

    @property
    def is_blob(self) -> bool:
        return "/blobs/" in self.path


def save_image(client: docker.DockerClient, image: str, directory: Path) -> SavedImage:
    """``docker save`` ``image`` into ``directory`` and index its config and layer blobs."""
    tar_path = directory / "image.tar"
    with open(tar_path, "wb") as f:
        for chunk in client.images.get(image).save(named=False):
            f.write(chunk)
    with tarfile.open(tar_path) as tar:
        manifest_file = tar.extractfile("manifest.json")
        assert manifest_file is not None
        (entry,) = json.loads(manifest_file.read())
        config_file = tar.extractfile(entry["Config"])
        assert config_file is not None
        config = json.loads(config_file.read())
        members = [_regular_member(tar, name) for name in entry["Layers"]]
    layers = tuple(
        BlobSource(
            digest=_file_digest(tar_path, m.offset_data, m.size),
            size=m.size,
            path=tar_path,
            offset=m.offset_data,
        )
        for m in members
    )
    diff_ids = list(config["rootfs"]["diff_ids"])
    if [layer.digest for layer in layers] != diff_ids:
        raise AssertionError(
            f"the layer tars of `docker save {image}` do not hash to the config's diff ids:"
            f" {[layer.digest for layer in layers]} != {diff_ids}"
        )
    return SavedImage(tar_path=tar_path, config=config, layers=layers)


def unique_image(saved: SavedImage, repository: str = REPOSITORY, tag: str = TAG) -> ServedImage:
    """``saved`` plus one tiny layer holding a fresh token at :data:`NONCE_PATH`."""
    token = secrets.token_hex(16)
    nonce = BlobSource(digest="", size=0, data=_single_file_tar(NONCE_PATH, token + "\n"))
    assert nonce.data is not None
    nonce = BlobSource(digest=sha256_digest(nonce.data), size=len(nonce.data), data=nonce.data)

    config = copy.deepcopy(dict(saved.config))
    config["rootfs"] = {"type": "layers", "diff_ids": [*config["rootfs"]["diff_ids"], nonce.digest]}
    config["history"] = [
        *config.get("history", []),
        {"created": config.get("created", ""), "created_by": f"pipes-docker test registry {token}"},
    ]
    config_bytes = json.dumps(config, separators=(",", ":"), sort_keys=True).encode()
    config_blob = BlobSource(
        digest=sha256_digest(config_bytes), size=len(config_bytes), data=config_bytes
    )

    layers = (*saved.layers, nonce)
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {
                "mediaType": CONFIG_V1,
                "size": config_blob.size,
                "digest": config_blob.digest,
            },
            "layers": [
                {"mediaType": LAYER_TAR, "size": layer.size, "digest": layer.digest}
                for layer in layers
            ],
        },
        indent=3,
    ).encode()
    return ServedImage(
        repository=repository,
        tag=tag,
        token=token,
        manifest=manifest,
        manifest_digest=sha256_digest(manifest),
        config_digest=config_blob.digest,
        layer_digests=tuple(layer.digest for layer in layers),
        blobs={blob.digest: blob for blob in (config_blob, *layers)},
    )


class RegistryServer:
    """The registry: a threaded ``http.server`` on 127.0.0.1, an ephemeral port."""

    def __init__(self, image: ServedImage, *, credentials: tuple[str, str] | None = None) -> None:
        self.image = image
        self.credentials = credentials
        self.manifest_missing = False
        self.blob_failures: dict[str, BlobFailure] = {}
        self._lock = threading.Lock()
        self._requests: list[RegistryRequest] = []
        self._connections = 0
        self._notes: list[str] = []
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> RegistryServer:
        assert self._server is None, "already started"
        self._server = _HTTPServer(self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"test-registry-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut open connections, and wait for every handler thread to end."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.shutdown()
        server.close_open_connections()
        server.server_close()  # joins the handler threads
        thread.join(timeout=10)
        if thread.is_alive():
            raise RuntimeError("the registry server thread did not stop")

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> RegistryServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "not started"
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the registry part of image references."""
        return f"127.0.0.1:{self.port}"

    @property
    def reference(self) -> str:
        """The image by tag: ``127.0.0.1:PORT/pipes-test/job:1``."""
        return f"{self.host}/{self.image.repository}:{self.image.tag}"

    @property
    def digest_reference(self) -> str:
        """The image pinned by manifest digest."""
        return f"{self.host}/{self.image.repository}@{self.image.manifest_digest}"

    # -- what happened -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RegistryRequest]:
        """The well-formed requests answered so far (the engine's TLS probe is not one)."""
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """Every connection accepted, the TLS probe included."""
        with self._lock:
            return self._connections

    @property
    def notes(self) -> list[str]:
        """What ``http.server`` would have logged (bad requests, mostly)."""
        with self._lock:
            return list(self._notes)

    def manifest_requests(self, method: str | None = None) -> list[RegistryRequest]:
        return [r for r in self.requests if r.is_manifest and method in (None, r.method)]

    def blob_requests(self, digest: str, method: str | None = "GET") -> list[RegistryRequest]:
        return [
            r
            for r in self.requests
            if r.is_blob and r.path.endswith("/" + digest) and method in (None, r.method)
        ]

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._connections = 0

    # -- used by the handler -----------------------------------------------------------------

    def _record(self, request: RegistryRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _accepted(self) -> None:
        with self._lock:
            self._connections += 1

    def _note(self, message: str) -> None:
        with self._lock:
            self._notes.append(message)

    def _authorized(self, header: str | None) -> bool:
        expected = self.credentials
        if expected is None:
            return True
        if not header:
            return False
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        username, sep, password = decoded.partition(":")
        return bool(sep) and (
            secrets.compare_digest(username.encode(), expected[0].encode())
            & secrets.compare_digest(password.encode(), expected[1].encode())
        )


class _HTTPServer(ThreadingHTTPServer):
    # Handler threads are joined by server_close(), after their connections are cut.
    daemon_threads = False
    block_on_close = True

    def __init__(self, registry: RegistryServer) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.registry = registry
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        self.registry._accepted()
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._open_lock:
            open_sockets = list(self._open)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pipes-docker-test-registry/1"
    timeout = 30  # a stuck engine connection must not hold a handler thread forever
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        self.server.registry._note(format % args)

    def do_GET(self) -> None:
        self._answer(with_body=True)

    def do_HEAD(self) -> None:
        self._answer(with_body=False)

    def _refuse_write(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._record(authorized=True, status=405)
        self._send_error(405, "UNSUPPORTED", "this registry is read-only", with_body=True)

    do_POST = do_PUT = do_PATCH = do_DELETE = _refuse_write

    def _answer(self, *, with_body: bool) -> None:
        registry = self.server.registry
        path = urlsplit(self.path).path
        if not registry._authorized(self.headers.get("Authorization")):
            self._record(authorized=False, status=401)
            self._send_error(
                401,
                "UNAUTHORIZED",
                "authentication required",
                with_body=with_body,
                headers={"WWW-Authenticate": f'Basic realm="{REALM}"'},
            )
            return
        if path in ("/v2", "/v2/"):
            self._record(authorized=True, status=200)
            self._send(200, b"{}", "application/json", with_body=with_body)
            return
        route = _ROUTE.match(path)
        image = registry.image
        if route is None or route["name"] != image.repository:
            self._record(authorized=True, status=404)
            self._send_error(404, "NAME_UNKNOWN", "repository name not known", with_body=with_body)
            return
        reference = route["reference"]
        if route["kind"] == "manifests":
            if registry.manifest_missing or reference not in (image.tag, image.manifest_digest):
                self._record(authorized=True, status=404)
                self._send_error(404, "MANIFEST_UNKNOWN", "manifest unknown", with_body=with_body)
                return
            self._record(authorized=True, status=200)
            self._send(
                200,
                image.manifest,
                MANIFEST_V2,
                with_body=with_body,
                headers={"Docker-Content-Digest": image.manifest_digest},
            )
            return
        blob = image.blobs.get(reference)
        if blob is None:
            self._record(authorized=True, status=404)
            self._send_error(404, "BLOB_UNKNOWN", "blob unknown to registry", with_body=with_body)
            return
        failure = registry.blob_failures.get(blob.digest)
        if failure == "500":
            self._record(authorized=True, status=500)
            self._send_error(500, "UNKNOWN", "injected blob failure", with_body=with_body)
            return
        self._record(authorized=True, status=200)
        self._send_blob(blob, corrupt=failure == "corrupt", with_body=with_body)

    def _record(self, *, authorized: bool, status: int) -> None:
        self.server.registry._record(
            RegistryRequest(self.command, urlsplit(self.path).path, authorized, status)
        )

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str,
        *,
        with_body: bool,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if with_body:
            self._write(body)

    def _send_error(
        self,
        status: int,
        code: str,
        message: str,
        *,
        with_body: bool,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        body = json.dumps({"errors": [{"code": code, "message": message, "detail": None}]})
        self._send(status, body.encode(), "application/json", with_body=with_body, headers=headers)

    def _send_blob(self, blob: BlobSource, *, corrupt: bool, with_body: bool) -> None:
        self.send_response(200)
        self.send_header("Docker-Distribution-API-Version", "registry/2.0")
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(blob.size))
        self.send_header("Docker-Content-Digest", blob.digest)
        self.send_header("Accept-Ranges", "none")
        self.end_headers()
        if not with_body:
            return
        for chunk in blob.chunks():
            if not self._write(chunk.translate(_FLIP) if corrupt else chunk):
                return

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return False
        return True


def remove_pulled_images(client: docker.DockerClient, host: str) -> list[str]:
    """Remove every image whose references name the registry at ``host``; return their ids.

    An image that is also one of the project's own (same id) is only untagged.
    """
    prefix = f"{host}/"
    protected = set()
    for name in (TEST_IMAGE, EXAMPLE_IMAGE, BASE_IMAGE):
        with contextlib.suppress(docker.errors.ImageNotFound):
            protected.add(client.images.get(name).id)
    removed = []
    for image in client.images.list(all=True):
        ours = [ref for ref in _references(image) if ref.startswith(prefix)]
        if not ours:
            continue
        if image.id in protected:
            for ref in ours:
                with contextlib.suppress(docker.errors.ImageNotFound):
                    client.images.remove(ref)
            continue
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.remove(image.id, force=True)
        removed.append(image.id)
    return removed


@pytest.fixture(scope="session", name="saved_test_image")
def saved_test_image_fixture(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SavedImage]:
    """The test image, saved once per session (a few seconds for ~200 MB)."""
    directory = tmp_path_factory.mktemp("registry-image")
    saved = save_image(docker_client, TEST_IMAGE, directory)
    yield saved
    saved.tar_path.unlink(missing_ok=True)


@pytest.fixture(name="registry")
def registry_fixture(
    docker_client: docker.DockerClient, saved_test_image: SavedImage
) -> Iterator[RegistryServer]:
    """A running registry serving a fresh image; stopped, and its pulled images removed, after.

    Tests flip its knobs (``credentials``, ``manifest_missing``, ``blob_failures``) as needed.
    """
    server = RegistryServer(unique_image(saved_test_image)).start()
    host = server.host
    try:
        yield server
    finally:
        server.stop()
        remove_pulled_images(docker_client, host)
        assert not server.running, "the registry server thread is still running"
        left = [
            ref
            for image in docker_client.images.list(all=True)
            for ref in _references(image)
            if ref.startswith(f"{host}/")
        ]
        assert not left, f"pulled images left behind: {left}"


def _references(image: Any) -> list[str]:
    return [*(image.attrs.get("RepoTags") or []), *(image.attrs.get("RepoDigests") or [])]


def _regular_member(tar: tarfile.TarFile, name: str) -> tarfile.TarInfo:
    """The member holding ``name``'s bytes, following links (``docker save`` may link layers)."""
    member = tar.getmember(name)
    for _ in range(16):
        if member.isfile():
            return member
        if member.issym():
            target = PurePosixPath(member.name).parent / member.linkname
            member = tar.getmember(_normalize(str(target)))
        elif member.islnk():
            member = tar.getmember(member.linkname)
        else:
            break
    raise AssertionError(f"{name} in the saved image is not a regular file")


def _normalize(path: str) -> str:
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/".join(parts)


def _file_digest(path: Path, offset: int, size: int) -> str:
    digest = hashlib.sha256()
    for chunk in BlobSource(digest="", size=size, path=path, offset=offset).chunks():
        digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _single_file_tar(path: str, content: str) -> bytes:
    data = content.encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo(path.lstrip("/"))
        info.size = len(data)
        info.mode = 0o644
        info.mtime = 0
        tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
