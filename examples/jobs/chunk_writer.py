"""A custom Pipes message channel, container half: upload messages in chunks to a store.

The matching reader is ``examples/chunked_messages.py``. dagster-pipes' blob-store writer
buffers messages on a thread and calls ``upload_messages_chunk`` with each batch and its number;
this channel writes the batch as ``{chunk_dir}/{number}.jsonl``, atomically (a temp file renamed
into place), so the reader never sees half a chunk.
"""

from __future__ import annotations

import os
from io import StringIO
from typing import IO

from dagster_pipes import (
    PipesBlobStoreMessageWriter,
    PipesBlobStoreMessageWriterChannel,
    PipesParams,
)


class ChunkDirMessageWriterChannel(PipesBlobStoreMessageWriterChannel):
    def __init__(self, chunk_dir: str, *, interval: float) -> None:
        super().__init__(interval=interval)
        self._chunk_dir = chunk_dir

    def upload_messages_chunk(self, payload: StringIO | IO[str], index: int) -> None:
        final = os.path.join(self._chunk_dir, f"{index}.jsonl")
        partial = final + ".partial"
        with open(partial, "w", encoding="utf-8") as chunk:
            chunk.write(payload.read())
        os.replace(partial, final)


class ChunkDirMessageWriter(PipesBlobStoreMessageWriter):
    """Pass to ``open_dagster_pipes(message_writer=...)``."""

    def __init__(self, *, interval: float = 0.5) -> None:
        super().__init__(interval=interval)

    def make_channel(self, params: PipesParams) -> ChunkDirMessageWriterChannel:
        return ChunkDirMessageWriterChannel(params["chunk_dir"], interval=self.interval)
