"""Files brought back: paths in the job's container copied out after it ends, before removal.

Legacy jobs often leave their result in a file (a report, a CSV, a directory of plots). A run
names those paths (:class:`PipesDockerCopyOut`); once the job has ended and before its
container is removed, each is read through the engine's archive endpoint (so a remote engine
works too: nothing is mounted) and unpacked under a destination on the orchestrator's side.
Each file arrives with its size and sha256 in the run's metadata.

A path that is missing, or larger than the limit the user set, is never a silent gap: it fails
the run (``on_problem="error"``) or is named in a warning and in the metadata
(``on_problem="warn"``). A file over the limit is not written at all (its tar header gives its
size before its bytes are read).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import shutil
import tarfile
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any, Literal, cast

from dagster import MetadataValue

from pipes_docker.backend import Job, JobExit, OutputStream
from pipes_docker.errors import PipesDockerFilesError
from pipes_docker.values import frozen

__all__ = ["PipesDockerCopyOut", "check_copy_out", "copy_out_after_exit"]

_HASH_CHUNK = 1 << 20
_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")


@frozen
class PipesDockerCopyOut:
    """Paths to copy out of a run's container once its job has ended.

    Each path (a file or a directory, absolute, in the container) lands under ``destination``
    by its last name: ``/out/report.csv`` as ``{destination}/report.csv``, ``/out/plots`` as
    ``{destination}/plots/...``. What was there before is replaced. Files are copied out
    whatever the job's exit code (a failed job's files help to see why); problems then only
    warn, so the job's own failure is the error.

    Args:
        paths: Absolute paths in the container.
        destination: A directory on the orchestrator's side; made if missing. Give each run
            its own (``f"/data/{context.run_id}"``) when runs may overlap.
        max_bytes: The most a path may bring back (a directory: all its files together).
        on_problem: A missing path or one over ``max_bytes``: ``"error"`` fails the run,
            ``"warn"`` logs a warning and lists the path under ``pipes_docker/files_missing``.

    Raises:
        PipesDockerFilesError: A path is not absolute, or an argument is out of range.
    """

    paths: Sequence[str]
    destination: str
    max_bytes: int | None = None
    on_problem: Literal["error", "warn"] = "error"

    def __post_init__(self) -> None:
        if isinstance(self.paths, str):
            object.__setattr__(self, "paths", (self.paths,))
        object.__setattr__(self, "paths", tuple(self.paths))
        relative = [path for path in self.paths if not posixpath.isabs(path)]
        if relative or not self.paths:
            raise PipesDockerFilesError(
                "PipesDockerCopyOut needs absolute paths in the container"
                + (f", not {', '.join(map(repr, relative))}." if relative else ".")
            )
        if self.max_bytes is not None and self.max_bytes < 0:
            raise PipesDockerFilesError(f"max_bytes must be >= 0, not {self.max_bytes}.")
        if self.on_problem not in ("error", "warn"):
            raise PipesDockerFilesError(
                f"on_problem must be 'error' or 'warn', not {self.on_problem!r}."
            )


@frozen
class _Copied:
    container_path: str
    local_path: str
    size: int
    sha256: str


def check_copy_out(request: PipesDockerCopyOut | None) -> PipesDockerCopyOut | None:
    if request is not None and not isinstance(request, PipesDockerCopyOut):
        raise PipesDockerFilesError(
            f"copy_out must be a PipesDockerCopyOut, not {type(request).__name__}."
        )
    return request


def copy_out_after_exit(
    request: PipesDockerCopyOut, warn: Callable[[str], None]
) -> Callable[[Job, JobExit], Mapping[str, Any]]:
    """The launcher's ``after_exit`` step for ``request``: copy, then say what arrived."""

    def after_exit(job: Job, exit_: JobExit) -> Mapping[str, Any]:
        strict = request.on_problem == "error" and exit_.exit_code == 0
        copied: list[_Copied] = []
        missing: dict[str, str] = {}
        os.makedirs(request.destination, exist_ok=True)
        for path in request.paths:
            problem = _copy_path(job, path, request, copied)
            if problem is None:
                continue
            text = f"[pipes-docker] {path} in {job.target}: {problem}"
            if strict:
                raise PipesDockerFilesError(
                    f"Copying files out of {job.target} failed: {path} {problem}. Pass"
                    " on_problem='warn' to PipesDockerCopyOut to let the run pass without it."
                )
            warn(text)
            missing[path] = problem
        return _metadata(request.destination, copied, missing)

    return after_exit


def _copy_path(
    job: Job, path: str, request: PipesDockerCopyOut, copied: list[_Copied]
) -> str | None:
    """Copy one path out; what went wrong, in words, or ``None``."""
    stream = job.archive(path)
    if stream is None:
        return "does not exist"
    base = posixpath.dirname(path.rstrip("/")) or "/"
    written: list[str] = []
    arrived: list[_Copied] = []  # joins ``copied`` only once the whole path arrived
    try:
        with tarfile.open(fileobj=cast(IO[bytes], _Reader(stream)), mode="r|") as archive:
            total = 0
            for member in archive:
                total += member.size if member.isfile() else 0
                if request.max_bytes is not None and total > request.max_bytes:
                    _discard(request.destination, written)
                    return f"is larger than max_bytes={request.max_bytes} (it holds more)"
                extracted = _extract(archive, member, request.destination)
                if extracted is not None:
                    written.append(member.name)
                    arrived.append(
                        _Copied(
                            posixpath.join(base, member.name),
                            extracted,
                            member.size,
                            _sha256(extracted),
                        )
                    )
    except (tarfile.TarError, OSError) as exc:
        _discard(request.destination, written)
        raise PipesDockerFilesError(
            f"Copying {path} out of {job.target} failed: {type(exc).__name__}: {exc}."
        ) from exc
    finally:
        stream.close()
    copied.extend(arrived)
    return None


def _extract(archive: tarfile.TarFile, member: tarfile.TarInfo, destination: str) -> str | None:
    """Extract one member safely (no absolute paths, no links out); its path if a file.

    tarfile's ``"data"`` filter does the checking where it exists (Python 3.11.4 and later);
    on an older 3.11 (Debian bookworm's is 3.11.2) the same rules are checked here first.
    """
    if _HAS_DATA_FILTER:
        archive.extract(member, destination, filter="data")
    else:
        _check_member(member)
        archive.extract(member, destination, set_attrs=False)
    if not member.isfile():
        return None
    return os.path.join(destination, *member.name.split("/"))


def _check_member(member: tarfile.TarInfo) -> None:
    """What the ``"data"`` filter refuses: paths and links that leave the destination, and
    anything but files, directories and links."""
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise tarfile.TarError(f"{member.name!r} is not a file, directory or link")
    _check_inside(member.name, member.name)
    if member.issym():
        _check_inside(posixpath.join(posixpath.dirname(member.name), member.linkname), member.name)
    elif member.islnk():
        _check_inside(member.linkname, member.name)


def _check_inside(path: str, name: str) -> None:
    normal = posixpath.normpath(path)
    if posixpath.isabs(path) or normal == ".." or normal.startswith("../"):
        raise tarfile.TarError(f"{name!r} would land outside the destination")


def _discard(destination: str, written: Sequence[str]) -> None:
    """Remove what one path had already written: a path arrives whole or not at all."""
    for name in {name.split("/")[0] for name in written}:
        target = os.path.join(destination, name)
        if os.path.isdir(target):
            shutil.rmtree(target, ignore_errors=True)
        elif os.path.exists(target):
            os.unlink(target)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _metadata(
    destination: str, copied: Sequence[_Copied], missing: Mapping[str, str]
) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "pipes_docker/files": MetadataValue.json(
            {
                item.container_path: {
                    "path": item.local_path,
                    "size": item.size,
                    "sha256": item.sha256,
                }
                for item in copied
            }
        ),
        "pipes_docker/files_destination": MetadataValue.path(destination),
    }
    if missing:
        metadata["pipes_docker/files_missing"] = MetadataValue.json(dict(missing))
    return metadata


class _Reader:
    """The archive stream as the file object ``tarfile``'s stream mode reads."""

    def __init__(self, stream: OutputStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._ended = False

    def read(self, size: int = -1) -> bytes:
        while not self._ended and (size < 0 or len(self._buffer) < size):
            chunk = self._stream.read(max(size, _HASH_CHUNK))
            if not chunk:
                self._ended = True
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data
