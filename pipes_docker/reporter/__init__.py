"""The shell reporter: Dagster Pipes for images with a POSIX shell and no Python.

``dagster-pipes`` (next to this module) is a POSIX ``sh`` program that writes Pipes messages.
The protocol's bootstrap variables are zlib-compressed JSON, which a shell cannot inflate
portably; but the orchestrator writes both sides of the injection, so it decodes them here and
hands the reporter what it needs in plain form:

* ``DAGSTER_PIPES_SH_MESSAGES``: where messages go, a file path in the container or
  ``stderr``/``stdout``;
* ``DAGSTER_PIPES_SH_CONTEXT``: a directory with one file per context field, read with ``cat``
  (extras under hex-encoded names, so any key is a valid file name).

Everything is copied into the container before it starts (like ``inject_pipes``), so it works on
remote engines and, through the same files, wherever the container runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any

import orjson
from dagster_pipes import DAGSTER_PIPES_MESSAGES_ENV_VAR, PipesContextData, decode_param

from pipes_docker.backend import ContainerFile
from pipes_docker.environment import Injection
from pipes_docker.errors import PipesDockerReporterError

__all__ = [
    "CONTEXT_DIR",
    "CONTEXT_ENV_VAR",
    "MESSAGES_ENV_VAR",
    "REPORTER_BIN",
    "context_files",
    "messages_destination",
    "reporter_injection",
    "reporter_script",
]

REPORTER_BIN = "/opt/pipes-docker/bin"
CONTEXT_DIR = "/opt/pipes-docker/context"
MESSAGES_ENV_VAR = "DAGSTER_PIPES_SH_MESSAGES"
CONTEXT_ENV_VAR = "DAGSTER_PIPES_SH_CONTEXT"
SCRIPT_NAME = "dagster-pipes"
# What a PATH-less image gets: Debian's default for root.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def reporter_script() -> bytes:
    """The ``dagster-pipes`` shell program shipped with this package."""
    return (files(__package__) / SCRIPT_NAME).read_bytes()


def messages_destination(bootstrap_env: Mapping[str, str]) -> str:
    """Where the reporter writes: a path in the container, ``stderr`` or ``stdout``.

    Raises:
        PipesDockerReporterError: The message reader expects messages somewhere a shell cannot
            write them (a blob store, say).
    """
    encoded = bootstrap_env.get(DAGSTER_PIPES_MESSAGES_ENV_VAR)
    if encoded is None:
        raise PipesDockerReporterError(
            f"The Pipes bootstrap variables lack {DAGSTER_PIPES_MESSAGES_ENV_VAR}; the shell"
            " reporter cannot know where to write messages."
        )
    params = decode_param(encoded)
    if isinstance(params.get("path"), str):
        return str(params["path"])
    for key in ("stdio", "buffered_stdio"):
        if params.get(key) in ("stderr", "stdout"):
            return str(params[key])
    raise PipesDockerReporterError(
        f"The shell reporter writes messages to a file or to stderr/stdout, but this run's"
        f" message reader asks for {params!r}. Use pipes-docker's own channels (the default),"
        " or a message reader that reads a file or the container's output."
    )


def context_files(
    context_data: PipesContextData, directory: str = CONTEXT_DIR
) -> list[ContainerFile]:
    """The context as files the reporter reads with ``cat``: one per field, exact bytes."""
    fields: dict[str, str | None] = {
        "run_id": context_data["run_id"],
        "job_name": context_data.get("job_name"),
        "retry_number": str(context_data.get("retry_number", 0)),
        "partition_key": context_data.get("partition_key"),
    }
    asset_keys = context_data.get("asset_keys")
    if asset_keys is not None:
        fields["asset_keys"] = "".join(f"{key}\n" for key in asset_keys)
    found = [
        ContainerFile(f"{directory}/{name}", value.encode())
        for name, value in fields.items()
        if value is not None
    ]
    extras: Mapping[str, Any] = context_data.get("extras") or {}
    found.append(ContainerFile(f"{directory}/extras.json", orjson.dumps(extras)))
    for key, value in extras.items():
        name = "k" + key.encode().hex()
        as_json = orjson.dumps(value)
        as_text = value.encode() if isinstance(value, str) else as_json
        found.append(ContainerFile(f"{directory}/extras/{name}", as_text))
        found.append(ContainerFile(f"{directory}/extras-json/{name}", as_json))
    return found


def reporter_injection(
    bootstrap_env: Mapping[str, str],
    context_data: PipesContextData,
    *,
    image_env: Mapping[str, str],
    env_layers: Sequence[Mapping[str, str]] = (),
) -> Injection:
    """The reporter, this run's context and the variables that point at them.

    ``bootstrap_env`` and ``context_data`` must come from the same Pipes session (the context the
    bootstrap variables point at is the one written here). The ``PATH`` already in force (the
    user's env, else the image's) is kept after the reporter's directory.

    Raises:
        PipesDockerReporterError: Messages go somewhere a shell cannot write them.
    """
    path = image_env.get("PATH") or DEFAULT_PATH
    for layer in env_layers:
        path = layer.get("PATH", path)
    return Injection(
        env={
            "PATH": ":".join(p for p in (REPORTER_BIN, path) if p),
            MESSAGES_ENV_VAR: messages_destination(bootstrap_env),
            CONTEXT_ENV_VAR: CONTEXT_DIR,
        },
        files=[
            ContainerFile(f"{REPORTER_BIN}/{SCRIPT_NAME}", reporter_script(), mode=0o755),
            *context_files(context_data),
        ],
    )
