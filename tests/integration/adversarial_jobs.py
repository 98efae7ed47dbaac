"""Jobs for the adversarial suite, and an orchestrator process that measures its own memory.

The job snippets run inside ``pipes-docker-testjob`` (``python -c``). ``RAW`` gives a job a
``raw(line: bytes)`` that writes a line straight onto the Pipes message channel, past
dagster-pipes' writer and its checks: appended to the messages file on the mounted channel,
printed on stderr on the streamed one. That is how a buggy or hostile writer would do it.

Run as a script, this module is an orchestrator for memory figures::

    python tests/integration/adversarial_jobs.py CASE CHANNEL WORK_DIR

CASE is ``stdout-line``, ``message`` (a 50 MB line on stdout, a 50 MB metadata value) or
``long-message-line`` (a 100 MB line on the message channel that starts like a message and
never parses; with ``PIPES_DOCKER_TEST_MAX_MESSAGE_BYTES`` set, pipes-docker's cap on a message
line is lowered to that many bytes first); CHANNEL is ``mounted`` or ``streamed``.

The process first materializes a tiny run of the same shape (so imports, Dagster's first-run
set-up and the engine connection are paid), then resets its peak RSS
(``/proc/self/clear_refs``), runs the big case, and writes ``WORK_DIR/result.json``: the RSS
before, the peak during, and what arrived (logs, warnings, metadata; a metadata value ``blob``
as its length and sha256). The container's output is forwarded to this process's stdout (the
test points it at a file) and kept in ``WORK_DIR/logs``. Peak RSS counts the whole process, so
the figure is an upper bound on what the run cost the orchestrator.
"""

import hashlib
import json
import logging
import os
import re
import sys
from pathlib import Path

import docker
from dagster import AssetExecutionContext, DagsterInstance, MaterializeResult, asset, materialize

import pipes_docker.messages
from pipes_docker import (
    PipesDockerChannel,
    PipesDockerClient,
    PipesDockerMountedChannel,
    PipesDockerStreamedChannel,
)

# --- job snippets ------------------------------------------------------------------------------

RAW = r"""
import os, sys
from dagster_pipes import decode_param
_params = decode_param(os.environ["DAGSTER_PIPES_MESSAGES"])
def raw(line: bytes) -> None:
    if "path" in _params:
        with open(_params["path"], "ab") as f:
            f.write(line + b"\n")
    else:
        sys.stderr.flush()
        sys.stderr.buffer.write(line + b"\n")
        sys.stderr.buffer.flush()
"""

FLOOD_SIZE = 50 * 1000 * 1000


def flood_text(size: int = FLOOD_SIZE) -> str:
    """``size`` characters that show their own order: ``<0000000><0000001>...``, cut at size."""
    return "".join(f"<{i:07d}>" for i in range(size // 9 + 1))[:size]


FLOOD_TEXT_SOURCE = """
def flood_text(size):
    return "".join(f"<{i:07d}>" for i in range(size // 9 + 1))[:size]
"""

STDOUT_LINE_JOB = (
    FLOOD_TEXT_SOURCE
    + """
import sys
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.log.info("before the flood")
    sys.stdout.write(flood_text(SIZE) + "\\n")
    sys.stdout.flush()
    print("after the flood", flush=True)
    pipes.log.info("after the flood")
    pipes.report_asset_materialization(metadata={"after": "the flood"})
"""
)

MESSAGE_JOB = (
    FLOOD_TEXT_SOURCE
    + """
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.log.info("before the big message")
    pipes.report_asset_materialization(metadata={"blob": flood_text(SIZE)})
    pipes.log.info("after the big message")
"""
)

# A line that starts like a message and goes on for SIZE bytes: a runaway or hostile writer.
LONG_MESSAGE_LINE_JOB = (
    RAW
    + """
from dagster_pipes import open_dagster_pipes
start = b'{"__dagster_pipes_version": "0.1", "method": "log", "params": {"message": "'
with open_dagster_pipes() as pipes:
    pipes.log.info("before the long line")
    raw(start + b"x" * SIZE)
    pipes.log.info("after the long line")
    pipes.report_asset_materialization(metadata={"after": "the long line"})
"""
)

JOBS = {
    "stdout-line": STDOUT_LINE_JOB,
    "message": MESSAGE_JOB,
    "long-message-line": LONG_MESSAGE_LINE_JOB,
}
# Lowers pipes_docker.messages.MAX_MESSAGE_BYTES in the orchestrator, so that a line over the cap
# need not be 512 MiB long.
MAX_MESSAGE_BYTES_ENV = "PIPES_DOCKER_TEST_MAX_MESSAGE_BYTES"


SIZES = {"stdout-line": FLOOD_SIZE, "message": FLOOD_SIZE, "long-message-line": 2 * FLOOD_SIZE}


def job_code(case: str, size: int) -> str:
    return JOBS[case].replace("SIZE", str(size))


# --- the measuring orchestrator ----------------------------------------------------------------


def _status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB$", text, re.MULTILINE)
    assert match, f"{field} not in /proc/self/status"
    return int(match.group(1))


def main() -> int:
    case, channel_name, work_dir = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    if os.environ.get(MAX_MESSAGE_BYTES_ENV):
        pipes_docker.messages.MAX_MESSAGE_BYTES = int(os.environ[MAX_MESSAGE_BYTES_ENV])

    channel: PipesDockerChannel = (
        PipesDockerMountedChannel(temp_dir_root=str(work_dir / "pipes-tmp"))
        if channel_name == "mounted"
        else PipesDockerStreamedChannel()
    )
    client = PipesDockerClient(
        docker_client=docker.from_env(),
        container_kwargs={"network_mode": "none"},
        log_dir=str(work_dir / "logs"),
        channel=channel,
    )

    def materialize_job(size: int) -> dict[str, object]:
        code = job_code(case, size)

        @asset(name="job")
        def job_asset(context: AssetExecutionContext) -> MaterializeResult:
            return client.run(
                context=context,
                image="pipes-docker-testjob:latest",
                command=["python", "-c", code],
            ).get_materialize_result()

        with DagsterInstance.ephemeral() as instance:
            result = materialize([job_asset], instance=instance, raise_on_error=False)
            # Read the peak before this process makes copies of its own (the sha256 below).
            peak = _status_kib("VmHWM")
            assert result.success
            (materialization,) = result.asset_materializations_for_node("job")
            metadata = {key: value.value for key, value in materialization.metadata.items()}
            entries = [
                (entry.level, entry.user_message)
                for entry in instance.all_logs(result.run_id)
                if entry.dagster_event is None
            ]
        blob = metadata.pop("blob", "")
        assert isinstance(blob, str)
        return {
            "metadata": metadata,
            "logs": [message for _, message in entries],
            "warnings": [message for level, message in entries if level >= logging.WARNING],
            "blob_length": len(blob),
            "blob_sha256": hashlib.sha256(blob.encode()).hexdigest(),
            "peak_kib": peak,
        }

    warmup = materialize_job(1000)
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
    before = _status_kib("VmRSS")
    big = materialize_job(SIZES[case])
    sys.stdout.flush()
    result = {
        "rss_before_kib": before,
        "peak_kib": big["peak_kib"],
        "warmup": warmup,
        "big": big,
    }
    (work_dir / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
