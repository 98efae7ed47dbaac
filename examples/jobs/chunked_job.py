"""A Pipes job that sends its messages through the custom chunk channel (chunk_writer.py)."""

import sys

from chunk_writer import ChunkDirMessageWriter
from dagster_pipes import open_dagster_pipes

with open_dagster_pipes(message_writer=ChunkDirMessageWriter(interval=0.2)) as pipes:
    rows = [{"id": i, "value": i * i} for i in range(pipes.get_extra("rows"))]
    print(f"computed {len(rows)} rows")
    print("this line goes to stderr, as always", file=sys.stderr)
    for batch in range(3):
        pipes.log.info(f"batch {batch} uploaded as a chunk")
    pipes.report_asset_materialization(metadata={"rows": len(rows), "channel": "chunk dir"})
