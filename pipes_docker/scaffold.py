"""What ``dg scaffold defs pipes_docker.PipesDockerComponent NAME`` writes.

A ``defs.yaml`` a newcomer can read top to bottom: the one required attribute (the image) left
empty, so ``dg check defs`` says what to set until it is set (or given as ``--image``); one
asset named after the folder; every other attribute commented out with what it does and its
default. Dagster's own scaffolding dumps bare YAML, which cannot carry comments, so the file is
written from a template here.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
from pydantic import BaseModel, Field

__all__ = ["PipesDockerComponentScaffolder", "PipesDockerScaffoldParams", "defs_yaml"]


class PipesDockerScaffoldParams(BaseModel):
    """Options of ``dg scaffold defs pipes_docker.PipesDockerComponent NAME``."""

    image: str | None = Field(default=None, description="The image to run.")
    asset_key: str | None = Field(
        default=None, description="The asset's key (default: the folder's name)."
    )


_TEMPLATE = """\
# A container job as Dagster assets (pipes-docker). Every attribute:
#   dg utils inspect-component pipes_docker.PipesDockerComponent
type: {type_name}

attributes:
  # The image to run (required). The job reports through dagster-pipes; one that does not
  # (a legacy job) still materializes its assets when it exits 0.
  image: {image}

  # The assets the job materializes: Dagster's asset fields (key, deps, description,
  # group_name, kinds, owners, tags, metadata, partitions_def, ...). Several assets make one
  # multi-asset: the job reports each by key.
  assets:
    - key: {asset_key}
      kinds: [docker]
      # deps: [upstream_table]
      # description: What the job makes.
      # group_name: containers
      # owners: ["team:data"]
      # tags: {{tier: gold}}

  # Asset checks the job reports (report_asset_check, or `dagster-pipes check` in sh).
  # checks:
  #   - name: not_empty
  #     asset: {asset_key}

  # The command, instead of the image's (a list is passed as is, a string is split).
  # command: [python, /app/job.py]

  # Environment variables of the job. Secrets come from the orchestrator's environment.
  # env:
  #   API_TOKEN: "{{{{ env('API_TOKEN') }}}}"

  # Extra values the job reads from its Pipes context (pipes.get_extra("top_n")).
  # extras:
  #   top_n: 3

  # Stop the job and fail the step when it runs longer than this (default: no limit).
  # timeout_seconds: 600

  # Copy the orchestrator's dagster-pipes into an image that has Python 3 but not it.
  # inject_pipes: false

  # Put the `dagster-pipes` shell command on the job's PATH: report from sh, no Python.
  # inject_reporter: false

  # Read an unmodified job's output lines: set log levels, take metadata or a check from them.
  # output_rules:
  #   - pattern: "^ERROR"
  #     log_level: error
  #   - pattern: '^rows written: (?P<rows>\\d+)$'
  #     metadata: {{rows: int}}

  # Bring files back from the container after the job (size and sha256 in the metadata).
  # copy_out:
  #   paths: [/out/report.csv]
  #   destination: /data/reports

  # docker-py containers.create keywords (mem_limit, network_mode, user, volumes, ...).
  # container_kwargs:
  #   network_mode: none
  #   mem_limit: 512m

  # When the image is pulled: if_not_present (default), always or never.
  # pull_policy: if_not_present

  # Credentials for pulls; never logged.
  # registry:
  #   url: registry.example.com
  #   username: "{{{{ env('REGISTRY_USER') }}}}"
  #   password: "{{{{ env('REGISTRY_PASSWORD') }}}}"

  # How context and messages travel: auto (default: mounted where the engine shares this
  # machine's temp dir, streamed elsewhere), mounted or streamed.
  # channel: auto

  # Run as a Docker Swarm job on any node instead (DOCKER_HOST names a manager); then
  # service_kwargs replace container_kwargs, and pull_policy and registry do not apply.
  # backend: swarm
  # service_kwargs:
  #   constraints: ["node.labels.gpu==true"]
  # schedule_timeout_seconds: 60

  # The op (step) that runs the job: name (default: the first asset's key), tags, pool.
  # op:
  #   name: {op_name}
  #   pool: docker
"""


def defs_yaml(type_name: str, *, name: str, image: str | None, asset_key: str | None) -> str:
    """The scaffolded ``defs.yaml`` for a folder called ``name``."""
    key = asset_key or re.sub(r"[^A-Za-z0-9_]", "_", name)
    return _TEMPLATE.format(
        type_name=type_name,
        image=_yaml_string(image) if image else "  # <- set me, e.g. my-registry/my-job:1",
        asset_key=key,
        op_name=re.sub(r"[^A-Za-z0-9_]", "_", key),
    )


def _yaml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class PipesDockerComponentScaffolder(dg.Scaffolder[PipesDockerScaffoldParams]):
    """Writes a commented ``defs.yaml`` for :class:`~pipes_docker.PipesDockerComponent`."""

    @classmethod
    def get_scaffold_params(cls) -> type[PipesDockerScaffoldParams]:
        return PipesDockerScaffoldParams

    def scaffold(self, request: dg.ScaffoldRequest[PipesDockerScaffoldParams]) -> None:
        text = defs_yaml(
            request.type_name,
            name=Path(request.target_path).name,
            image=request.params.image,
            asset_key=request.params.asset_key,
        )
        if request.append:
            with open(request.target_path, "a", encoding="utf-8") as file:
                file.write("---\n" + text)
            return
        (Path(request.target_path) / "defs.yaml").write_text(text, encoding="utf-8")
