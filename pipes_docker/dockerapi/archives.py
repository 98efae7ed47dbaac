"""Tar archives as the engine's archive endpoints take and give them."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence

from pipes_docker.backend import ContainerFile

__all__ = ["tar_files", "untar_one"]


def tar_files(files: Sequence[ContainerFile]) -> bytes:
    """A tar of ``files`` with their parent directories, to be extracted at ``/``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        directories: set[str] = set()
        for file in files:
            parts = file.path.strip("/").split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in directories:
                    directories.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode = tarfile.DIRTYPE, 0o755
                    archive.addfile(info)
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode = len(file.data), file.mode
            archive.addfile(info, io.BytesIO(file.data))
    return buffer.getvalue()


def untar_one(data: bytes) -> bytes | None:
    """The content of the first regular file in the tar ``data`` (what ``get_archive`` of one
    file returns), or ``None`` when it holds none."""
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        for member in archive:
            if member.isfile():
                extracted = archive.extractfile(member)
                return extracted.read() if extracted is not None else None
    return None
