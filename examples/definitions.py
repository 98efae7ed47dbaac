"""A Dagster code location whose assets run their work in Docker containers.

Four ways to bring a job to pipes-docker:

* ``word_counts``: an image built for Pipes, with dagster_pipes vendored at build time
  (``images/example``, built by ``images/build.sh``);
* ``legacy_report``: an unchanged legacy shell job; its exit code and output are all it says;
* ``platform_summary``: a Python script in a plain Python image, with dagster_pipes injected
  at run time (``inject_pipes=True``);
* ``chunked_report``: a job whose messages travel through a custom channel of its own
  (``examples/chunked_messages.py`` and ``examples/jobs/chunk_writer.py``), composed with the
  client's parts;
* ``legacy_export``: an unchanged legacy shell job read through output rules (its
  ``rows written: N`` line becomes metadata, its ``WARNING`` lines warnings) whose CSV is copied
  out of the container after it ends;
* ``shell_quality``: a shell-only job in an image with no Python
  (``pipes-docker-shell-dash``) that reports a materialization with metadata and an asset check
  through the injected ``dagster-pipes`` command (``inject_reporter=True``).

Load it with ``dagster dev -m examples.definitions``, or materialize everything once with
``python -m examples.demo``.
"""

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    Definitions,
    MaterializeResult,
    asset,
)

from examples.chunked_messages import ChunkDirMessageReader, default_store_root
from pipes_docker import PipesDockerClient, PipesDockerCopyOut, PipesDockerOutputRule

EXAMPLE_IMAGE = "pipes-docker-example:latest"
PLAIN_PYTHON_IMAGE = "python:3.11-slim-bookworm"
JOBS_DIR = Path(__file__).resolve().parent / "jobs"
JOBS_MOUNT = {str(JOBS_DIR): {"bind": "/jobs", "mode": "ro"}}
CHUNK_STORE = default_store_root()
SHELL_IMAGE = "pipes-docker-shell-dash:latest"  # dash and coreutils, no Python
# Where files copied out of job containers land (one dir per run).
FILES_ROOT = os.environ.get(
    "PIPES_DOCKER_EXAMPLE_FILES", os.path.join(tempfile.gettempdir(), "pipes-docker-files")
)
# How legacy_export's unchanged output is read.
EXPORT_RULES = [
    PipesDockerOutputRule(
        r"^rows written: (?P<rows_written>\d+)$", metadata={"rows_written": "int"}
    ),
    PipesDockerOutputRule(r"^WARNING\b", log_level="warning"),
    PipesDockerOutputRule(r"^ERROR\b", log_level="error"),
]


def job_script(name: str) -> list[str]:
    """A job script passed inline (``sh -c``): no mount, so it works on any engine."""
    return ["sh", "-c", (JOBS_DIR / name).read_text()]


@asset(description="Word counts computed by a Pipes job in an image that vendors dagster_pipes.")
def word_counts(
    context: AssetExecutionContext, docker_pipes: PipesDockerClient
) -> MaterializeResult:
    return docker_pipes.run(
        context=context,
        image=EXAMPLE_IMAGE,
        extras={"top_n": 3},
    ).get_materialize_result()


@asset(description="A legacy shell job, run unchanged.")
def legacy_report(
    context: AssetExecutionContext, docker_pipes: PipesDockerClient
) -> MaterializeResult:
    return docker_pipes.run(
        context=context,
        image=PLAIN_PYTHON_IMAGE,
        command=["sh", "/jobs/legacy_report.sh"],
        container_kwargs={"volumes": JOBS_MOUNT},
    ).get_materialize_result()


@asset(description="A Pipes script in a plain Python image; dagster_pipes is injected.")
def platform_summary(
    context: AssetExecutionContext, docker_pipes: PipesDockerClient
) -> MaterializeResult:
    return docker_pipes.run(
        context=context,
        image=PLAIN_PYTHON_IMAGE,
        command=["python3", "/jobs/injected_summary.py"],
        container_kwargs={"volumes": JOBS_MOUNT},
        inject_pipes=True,
    ).get_materialize_result()


@asset(description="A Pipes job whose messages travel through a custom chunk channel.")
def chunked_report(
    context: AssetExecutionContext, chunked_pipes: PipesDockerClient
) -> MaterializeResult:
    return chunked_pipes.run(
        context=context,
        image=PLAIN_PYTHON_IMAGE,
        command=["python3", "/jobs/chunked_job.py"],
        extras={"rows": 1000},
        container_kwargs={"volumes": JOBS_MOUNT},
        inject_pipes=True,
    ).get_materialize_result()


@asset(description="An unchanged legacy export: output rules read it, its CSV is copied out.")
def legacy_export(
    context: AssetExecutionContext, docker_pipes: PipesDockerClient
) -> MaterializeResult:
    return docker_pipes.run(
        context=context,
        image=SHELL_IMAGE,
        command=job_script("legacy_export.sh"),
        output_rules=EXPORT_RULES,
        copy_out=PipesDockerCopyOut(
            ["/out/export.csv"], os.path.join(FILES_ROOT, context.run_id), max_bytes=1 << 20
        ),
    ).get_materialize_result()


@asset(
    description="A shell-only job (no Python in its image) reporting through dagster-pipes.",
    check_specs=[AssetCheckSpec("bad_rows_within_limit", asset="shell_quality")],
)
def shell_quality(
    context: AssetExecutionContext, docker_pipes: PipesDockerClient
) -> Iterator[MaterializeResult | AssetCheckResult]:
    yield from docker_pipes.run(
        context=context,
        image=SHELL_IMAGE,
        command=["dagster-pipes", "run", "--", *job_script("shell_quality.sh")],
        extras={"max_bad_rows": 1},
        inject_reporter=True,
    ).get_results()


defs = Definitions(
    assets=[
        word_counts,
        legacy_report,
        platform_summary,
        chunked_report,
        legacy_export,
        shell_quality,
    ],
    resources={
        # The jobs need no network; "none" also works on engines without a bridge network.
        "docker_pipes": PipesDockerClient(container_kwargs={"network_mode": "none"}),
        # The client's own context transport, with the user's message reader.
        "chunked_pipes": PipesDockerClient(
            message_reader=ChunkDirMessageReader(CHUNK_STORE, "/chunk-store"),
            container_kwargs={
                "network_mode": "none",
                "volumes": {CHUNK_STORE: {"bind": "/chunk-store", "mode": "rw"}},
            },
        ),
    },
)
