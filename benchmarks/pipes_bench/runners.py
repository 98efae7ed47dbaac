"""The runners: one class per way of running a job in a container (or, for the floor, without).

A runner's ``run(job, labels)`` does one run and returns its figures: ``wall`` (the whole
call), ``run`` (the client's ``run()`` inside the asset; the same as ``wall`` where there is no
Dagster), ``cpu`` (CPU seconds of the orchestrator process during the call), ``ok`` and
``error``. The Dagster runners also keep the run's result and event log (``_result``,
``_logs``) for the checks in ``scenarios.analyse``.

Every container runs with network mode ``none`` and carries the labels it is given, by which
``measure`` finds (and removes) what a runner left behind.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .scenarios import ASSET_NAME, IMAGE, MESSAGE_PREFIX, metadata_blob


@dataclass(frozen=True)
class Job:
    """One run's work: the scenario's job kind, its script, the bench parameters."""

    kind: str  # "noop", "stdout", "logs", "metadata" or "sleep"
    script: str
    params: dict[str, Any]
    stdout_bytes: int = 0
    messages: int = 0


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def proc_status_kib(field: str) -> int:
    """A ``/proc/self/status`` figure in KiB (``VmHWM``: the process's peak RSS so far)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def failure_message(result: Any) -> str:
    """The user-facing error of a failed ``materialize`` result, in one line."""
    for event in result.all_events:
        if event.is_failure and event.step_failure_data is not None:
            error = event.step_failure_data.error
            while (
                error is not None
                and error.cause is not None
                and "DagsterExecutionStep" in (error.cls_name or "")
            ):
                error = error.cause
            if error is not None:
                return f"{error.cls_name}: {error.message.strip().splitlines()[0][:200]}"
    return "run failed"


def raw_pipes_env() -> dict[str, str]:
    """Bootstrap env vars so that the job's ``open_dagster_pipes()`` works without a client.

    Context travels inline; messages go to the container's stderr (as with the reference
    client), where nobody reads them.
    """
    from dagster_pipes import encode_param

    context = {
        "asset_keys": [ASSET_NAME],
        "code_version_by_asset_key": {ASSET_NAME: None},
        "provenance_by_asset_key": {ASSET_NAME: None},
        "partition_key": None,
        "partition_key_range": None,
        "partition_time_window": None,
        "run_id": str(uuid.uuid4()),
        "job_name": "bench",
        "retry_number": 0,
        "extras": {},
    }
    return {
        "DAGSTER_PIPES_CONTEXT": encode_param({"data": context}),
        "DAGSTER_PIPES_MESSAGES": encode_param({"stdio": "stderr"}),
    }


# --------------------------------------------------------------------------------------------
# Runners that go through Dagster: one `materialize` of one asset per run
# --------------------------------------------------------------------------------------------


class DagsterRunner:
    """Materializes one asset per run, on an ephemeral instance; the asset's body is ``work``.

    Safe to call from several threads at once (each call has its own asset and instance).
    """

    in_process = True  # the orchestrator is this process: its peak RSS is the figure

    def work(self, context: Any, job: Job, labels: dict[str, str]) -> tuple[Any, dict[str, Any]]:
        """The asset's body: returns its ``MaterializeResult`` and figures for the record."""
        raise NotImplementedError

    def run(self, job: Job, labels: dict[str, str], keep: bool = True) -> dict[str, Any]:
        from dagster import DagsterInstance, asset, materialize

        inner: dict[str, Any] = {}

        @asset(name=ASSET_NAME)
        def bench_asset(context):  # no annotation: `from __future__ import annotations` is on
            started = time.perf_counter()
            try:
                result, figures = self.work(context, job, labels)
            finally:
                inner["run"] = time.perf_counter() - started
            inner.update(figures)
            return result

        with DagsterInstance.ephemeral() as instance:
            cpu_before = cpu_seconds()
            started = time.perf_counter()
            result = materialize([bench_asset], instance=instance, raise_on_error=False)
            out: dict[str, Any] = {
                "wall": time.perf_counter() - started,
                "cpu": cpu_seconds() - cpu_before,
                # Before the checks allocate anything: the run's own peak.
                "peak_rss_kib": proc_status_kib("VmHWM"),
                "ok": result.success,
                **inner,
            }
            if not result.success:
                out["error"] = failure_message(result)
            elif out.pop("wrong", None):
                out["ok"] = False
                out["error"] = out.pop("wrong_reason")
            if keep:
                out["_result"] = result
                out["_logs"] = instance.all_logs(result.run_id)
        return out


def disable_stats_sampling() -> None:
    """Turn off pipes-docker's resource-usage sampling: no stats request is ever made.

    ``DockerEngine.usage`` starts a thread that reads the engine's stats stream during each
    run; here it returns a sampler that has nothing to stop and reports nothing.
    """
    from pipes_docker.dockerapi.containers import DockerEngine

    class NoSampler:
        def stop(self) -> dict[str, int | float]:
            return {}

    def usage(self: Any, container_id: str) -> NoSampler:
        return NoSampler()

    DockerEngine.usage = usage  # type: ignore[assignment,method-assign]


class PipesDockerRunner(DagsterRunner):
    """``pipes_docker.PipesDockerClient`` with an explicit channel (transport)."""

    def __init__(self, transport: str, *, sampling: bool = True, reattach: bool = True) -> None:
        from pipes_docker import (
            PipesDockerClient,
            PipesDockerMountedChannel,
            PipesDockerStreamedChannel,
        )

        if not sampling:
            disable_stats_sampling()
        channel = (
            PipesDockerMountedChannel() if transport == "mounted" else PipesDockerStreamedChannel()
        )
        self.transport = transport
        self.client = PipesDockerClient(
            container_kwargs={"network_mode": "none"},
            forward_stdio=True,
            channel=channel,
            reattach=reattach,
        )

    def work(self, context: Any, job: Job, labels: dict[str, str]) -> tuple[Any, dict[str, Any]]:
        invocation = self.client.run(
            context=context,
            image=IMAGE,
            command=["python", "-c", job.script],
            container_kwargs={"labels": labels},
        )
        result = invocation.get_materialize_result()
        value = (result.metadata or {}).get("pipes_docker/transport")
        transport = getattr(value, "value", value)
        figures: dict[str, Any] = {"transport": transport}
        if transport != self.transport:
            figures["wrong"] = True
            figures["wrong_reason"] = f"transport was {transport!r}, not {self.transport!r}"
        return result, figures


class ReferenceRunner(DagsterRunner):
    """dagster-docker's ``PipesDockerClient``, the field's reference.

    It takes no client-level container options, so the network mode goes on every run. Its
    message reader keeps the current run's handler on the client instance: runs at once from
    one client hand their messages to whichever run set it last. For runs at once, the
    ``reference`` row therefore gives every run a client of its own (``client_per_run``), and
    ``reference-shared`` shows what one client shared by the threads does.
    """

    def __init__(self, client_per_run: bool = False) -> None:
        from dagster_docker import PipesDockerClient as ReferenceClient

        self._make = ReferenceClient
        self.client = None if client_per_run else ReferenceClient()

    def work(self, context: Any, job: Job, labels: dict[str, str]) -> tuple[Any, dict[str, Any]]:
        client = self.client or self._make()
        invocation = client.run(
            context=context,
            image=IMAGE,
            command=["python", "-c", job.script],
            container_kwargs={"network_mode": "none", "labels": labels},
        )
        return invocation.get_materialize_result(), {}


class FloorRunner(DagsterRunner):
    """The asset does the job's work itself, with no container: what Dagster alone costs."""

    def __init__(self, job: Job) -> None:
        # Made before the baseline is taken: building it is the job's work, not Dagster's.
        self._blob = metadata_blob(job.params["metadata_bytes"]) if job.kind == "metadata" else ""

    def work(self, context: Any, job: Job, labels: dict[str, str]) -> tuple[Any, dict[str, Any]]:
        from dagster import MaterializeResult, MetadataValue

        metadata = {}
        if job.kind == "stdout":
            line_bytes = job.params["line_bytes"]
            block = ("x" * (line_bytes - 1) + "\n") * (65536 // line_bytes)
            for _ in range(job.stdout_bytes // 65536):
                sys.stdout.write(block)
                sys.stdout.flush()  # as a forwarding client does, once per chunk
        elif job.kind == "logs":
            for i in range(job.messages):
                context.log.info(f"{MESSAGE_PREFIX}{i}")
        elif job.kind == "metadata":
            metadata["blob"] = MetadataValue.text(self._blob)
        elif job.kind == "sleep":
            time.sleep(job.params["sleep_seconds"])
        return MaterializeResult(metadata=metadata), {}


# --------------------------------------------------------------------------------------------
# Runners without Dagster: the engine's floor
# --------------------------------------------------------------------------------------------


class DockerPyRunner:
    """docker-py's low-level API: create, start, wait, remove. No attach: output is not read.

    The fewest engine round trips a run can take: the floor for a Python client's startup.
    The container keeps the engine's default log driver, as ``docker run --rm`` does.
    """

    in_process = True  # this process (docker-py, no Dagster) is the orchestrator

    def __init__(self, pool_size: int = 10) -> None:
        import docker

        self.api = docker.from_env(max_pool_size=max(10, pool_size)).api

    def run(self, job: Job, labels: dict[str, str], keep: bool = True) -> dict[str, Any]:
        env = raw_pipes_env()
        host_config = self.api.create_host_config(network_mode="none")
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        created = self.api.create_container(
            IMAGE,
            command=["python", "-c", job.script],
            environment=env,
            labels=labels,
            host_config=host_config,
        )
        try:
            self.api.start(created)
            status = int(self.api.wait(created).get("StatusCode", -1))
        finally:
            self.api.remove_container(created, v=True, force=True)
        wall = time.perf_counter() - started
        out: dict[str, Any] = {
            "wall": wall,
            "run": wall,
            "cpu": cpu_seconds() - cpu_before,
            "peak_rss_kib": proc_status_kib("VmHWM"),
            "ok": status == 0,
        }
        if status:
            out["error"] = f"container exited {status}"
        return out


class DockerRunRunner:
    """``docker run --rm --network none IMAGE python -c JOB`` through ``subprocess``.

    Its stdout is the worker's fd 1 (which ``measure`` points at a file or ``/dev/null``),
    stderr goes to ``/dev/null``.
    """

    in_process = False  # the orchestrator is the docker CLI process

    def __init__(self, log_driver_none: bool) -> None:
        self.log_driver_none = log_driver_none

    def run(self, job: Job, labels: dict[str, str], keep: bool = True) -> dict[str, Any]:
        cmd = ["docker", "run", "--rm", "--network", "none"]
        if self.log_driver_none:
            cmd += ["--log-driver", "none"]
        for key, value in labels.items():
            cmd += ["--label", f"{key}={value}"]
        for key, value in raw_pipes_env().items():
            cmd += ["-e", f"{key}={value}"]
        cmd += [IMAGE, "python", "-c", job.script]
        cpu_before = cpu_seconds(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        proc = subprocess.run(cmd, stderr=subprocess.DEVNULL, check=False)
        wall = time.perf_counter() - started
        out: dict[str, Any] = {
            "wall": wall,
            "run": wall,
            "cpu": cpu_seconds(resource.RUSAGE_CHILDREN) - cpu_before,
            "ok": proc.returncode == 0,
        }
        if proc.returncode:
            out["error"] = f"docker run exited {proc.returncode}"
        return out


# key -> label as printed. The order is the table's.
RUNNERS = {
    "mounted": "pipes-docker mounted",
    "mounted-nostats": "pipes-docker mounted, stats sampling off",
    "streamed": "pipes-docker streamed",
    "streamed-noreattach": "pipes-docker streamed, reattach=False",
    "reference": "dagster-docker (reference)",
    "reference-shared": "dagster-docker, one client for all threads",
    "docker-py": "docker-py create/start/wait/remove",
    "docker-run": "docker run --rm",
    "docker-run-nolog": "docker run --rm --log-driver none",
    "floor": "floor: same work in-process",
}
# Names of bench.py's first version, still accepted on the command line.
ALIASES = {
    "pipes": ("mounted", "mounted-nostats", "streamed", "streamed-noreattach"),
    "raw": ("docker-run",),
    "raw-nolog": ("docker-run-nolog",),
}


def make_runner(key: str, job: Job, concurrent: int = 0) -> Any:
    """The runner ``key`` (see ``RUNNERS``) for ``job``; ``concurrent``: runs at once."""
    if key == "mounted":
        return PipesDockerRunner("mounted")
    if key == "mounted-nostats":
        return PipesDockerRunner("mounted", sampling=False)
    if key == "streamed":
        return PipesDockerRunner("streamed")
    if key == "streamed-noreattach":
        return PipesDockerRunner("streamed", reattach=False)
    if key == "reference":
        return ReferenceRunner(client_per_run=concurrent > 0)
    if key == "reference-shared":
        return ReferenceRunner(client_per_run=False)
    if key == "docker-py":
        return DockerPyRunner(pool_size=concurrent)
    if key in ("docker-run", "docker-run-nolog"):
        return DockerRunRunner(log_driver_none=key == "docker-run-nolog")
    if key == "floor":
        return FloorRunner(job)
    raise ValueError(f"unknown runner {key!r}")
