"""A custom Pipes message channel, orchestrator half: messages uploaded in chunks to a store.

This is the shape of dagster's blob-store channels (S3, GCS, Azure), with a directory as the
store so that it runs anywhere: the container's writer (``examples/jobs/chunk_writer.py``)
buffers messages and uploads each batch as a numbered chunk file; this reader polls for the next
chunk number, downloads it and hands its messages to Dagster. Plug it into the client as
``PipesDockerClient(message_reader=ChunkDirMessageReader(...))``; pipes-docker still passes
the context (inline or copied in), and still demultiplexes and forwards the container's
stdout/stderr.

The store here is a host directory bind-mounted into the container, so the example needs an
engine that shares this machine's files; a real blob store (S3 and the like) needs none.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from dagster import PipesBlobStoreMessageReader
from dagster_pipes import PipesParams

STORE_DIR_KEY = "chunk_dir"


class ChunkDirMessageReader(PipesBlobStoreMessageReader):
    """Downloads message chunks ``1.jsonl``, ``2.jsonl``, ... from a per-run dir of the store.

    Args:
        store_root: The store as this process sees it.
        container_root: The same dir as the container sees it (where it is mounted).
        interval: Seconds between looks for the next chunk.
    """

    def __init__(self, store_root: str, container_root: str, *, interval: float = 0.2) -> None:
        super().__init__(interval=interval)
        self._store_root = store_root
        self._container_root = container_root

    @contextmanager
    def get_params(self) -> Iterator[PipesParams]:
        # dagster's blob-store readers keep their chunk counter on the instance: start each
        # session at chunk 1 (and so use one reader for one run at a time).
        self.counter = 1
        name = uuid.uuid4().hex
        local = os.path.join(self._store_root, name)
        os.makedirs(local, mode=0o777)
        os.chmod(local, 0o777)  # the job may run as any uid
        try:
            yield {STORE_DIR_KEY: f"{self._container_root}/{name}", "local_dir": local}
        finally:
            shutil.rmtree(local, ignore_errors=True)

    def messages_are_readable(self, params: PipesParams) -> bool:
        return os.path.isdir(params["local_dir"])

    def download_messages_chunk(self, index: int, params: PipesParams) -> str | None:
        path = os.path.join(params["local_dir"], f"{index}.jsonl")
        try:
            with open(path, encoding="utf-8") as chunk:
                return chunk.read()
        except FileNotFoundError:
            return None

    @property
    def expected_writer_count(self) -> int:
        # One container writes. The base property is a dagster preview API that warns.
        return 1

    def no_messages_debug_text(self) -> str:
        return (
            f"Chunks are read from a per-run dir under {self._store_root}, which the container"
            f" sees under {self._container_root}. The job must open Pipes with"
            " `open_dagster_pipes(message_writer=ChunkDirMessageWriter())`."
        )


def default_store_root() -> str:
    """A store dir every uid can write into, made for this process and removed when it exits.

    Each process that loads the definitions (``dagster dev``'s code server, a run worker, the
    demo) gets its own; the runs' per-run dirs inside it are removed as each run ends.
    """
    root = tempfile.mkdtemp(prefix="pipes-docker-example-chunks-")
    os.chmod(root, 0o777)  # the job may run as any uid
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    return root
