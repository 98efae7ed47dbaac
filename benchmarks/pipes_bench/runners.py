"""The runners: one class per way of running a job in a container (or, for the floor, without).

A runner's ``run(job, labels)`` does one run and returns its figures: ``wall`` (the whole
call), ``run`` (the client's ``run()`` inside the asset; the same as ``wall`` where there is no
Dagster), ``cpu`` (CPU seconds of the orchestrator process during the call), ``ok`` and
``error``. The Dagster runners also keep the run's result and event log (``_result``,
``_logs``) for the checks in ``scenarios.analyse``.

Every container runs with network mode ``none`` (``host`` inside a Swarm node) and carries the
labels it is given, by which ``measure`` finds (and removes) what a runner left behind. A runner
is described by a ``Runner`` value in ``RUNNERS``; ``make_runner`` builds it for one worker, with
the addresses of the engines of the suite (``engines.Engines.urls``).
"""

from __future__ import annotations

import contextlib
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

    def run(
        self, job: Job, labels: dict[str, str], keep: bool = True, instance: Any = None
    ) -> dict[str, Any]:
        """One ``materialize``; on ``instance`` when given (made before the clock started)."""
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

        with contextlib.nullcontext(instance) if instance else DagsterInstance.ephemeral() as inst:
            cpu_before = cpu_seconds()
            started = time.perf_counter()
            result = materialize([bench_asset], instance=inst, raise_on_error=False)
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
                out["_logs"] = inst.all_logs(result.run_id)
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


def bench_rules() -> list[Any]:
    """Three rules as a legacy job's user writes them; the flood's lines match none of them,
    so every line is scanned and none reported: what rules cost on output they do not want."""
    from pipes_docker import PipesDockerOutputRule

    return [
        PipesDockerOutputRule(r"^ERROR", log_level="error"),
        PipesDockerOutputRule(r"^WARN(ING)?\b", log_level="warning"),
        PipesDockerOutputRule(r"^rows written: (?P<rows>\d+)$", metadata={"rows": "int"}),
    ]


def docker_client(url: str | None) -> Any:
    """A docker-py client of the engine at ``url`` (``None``: the environment's, as a user's)."""
    import docker

    return docker.from_env() if url is None else docker.DockerClient(base_url=url, timeout=120)


class PipesDockerRunner(DagsterRunner):
    """``pipes_docker.PipesDockerClient`` with the row's channel (``None``: the default)."""

    def __init__(self, spec: Runner, url: str | None) -> None:
        from pipes_docker import (
            PipesDockerClient,
            PipesDockerMountedChannel,
            PipesDockerStreamedChannel,
        )

        if not spec.sampling:
            disable_stats_sampling()
        channels = {"mounted": PipesDockerMountedChannel, "streamed": PipesDockerStreamedChannel}
        self.expect = spec.expect or spec.channel
        self.client = PipesDockerClient(
            # The local engine: none given, as a user's default (it is chosen from the
            # environment, its API version remembered across processes).
            docker_client=docker_client(url) if url is not None else None,
            container_kwargs={"network_mode": spec.network},
            forward_stdio=True,
            reattach=spec.reattach,
            output_rules=bench_rules() if spec.rules else None,
            **({"channel": channels[spec.channel]()} if spec.channel else {}),
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
        if self.expect and transport != self.expect:
            figures["wrong"] = True
            figures["wrong_reason"] = f"transport was {transport!r}, not {self.expect!r}"
        return result, figures


class SwarmRunner(DagsterRunner):
    """``pipes_docker.PipesDockerSwarmClient`` on the manager, the job placed on the worker."""

    def __init__(self, url: str | None, worker_hostname: str) -> None:
        from pipes_docker import PipesDockerSwarmClient

        self.client = PipesDockerSwarmClient(
            docker_client=docker_client(url),
            service_kwargs={
                "constraints": [f"node.hostname=={worker_hostname}"],
                "networks": ["host"],
            },
            forward_stdio=True,
        )

    def work(self, context: Any, job: Job, labels: dict[str, str]) -> tuple[Any, dict[str, Any]]:
        command = ["python", "-c", job.script]
        invocation = self.client.run(context=context, image=IMAGE, command=command)
        return invocation.get_materialize_result(), {}


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
    """docker-py's low-level API: create, start, wait, (logs,) remove.

    Without ``read_logs`` there is no attach and no logs call: the fewest engine round trips a
    run can take, the floor for a Python client's startup. The container keeps the engine's
    default log driver, as ``docker run --rm`` does.
    """

    in_process = True  # this process (docker-py, no Dagster) is the orchestrator

    def __init__(self, url: str | None, pool_size: int = 10, read_logs: bool = False) -> None:
        import docker

        pool = max(10, pool_size)
        self.api = (
            docker.from_env(max_pool_size=pool).api
            if url is None
            else docker.APIClient(base_url=url, max_pool_size=pool)
        )
        self.read_logs = read_logs

    def run(
        self, job: Job, labels: dict[str, str], keep: bool = True, instance: Any = None
    ) -> dict[str, Any]:
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
            if self.read_logs:
                sys.stdout.buffer.write(self.api.logs(created, stdout=True, stderr=False))
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
    """``docker [-H URL] run --rm --network none IMAGE python -c JOB`` through ``subprocess``.

    Its stdout is the worker's fd 1 (which ``measure`` points at a file or ``/dev/null``),
    stderr goes to ``/dev/null``.
    """

    in_process = False  # the orchestrator is the docker CLI process

    def __init__(self, url: str | None, log_driver_none: bool) -> None:
        self.cli = ["docker", "-H", url] if url else ["docker"]
        self.log_driver_none = log_driver_none

    def run(
        self, job: Job, labels: dict[str, str], keep: bool = True, instance: Any = None
    ) -> dict[str, Any]:
        cmd = [*self.cli, "run", "--rm", "--network", "none"]
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


class ServiceRunner:
    """docker-py's low-level API on a Swarm manager, no Dagster: the floor of a Swarm job.

    ``create_service`` (mode ``replicated-job``, restart none, placed on the worker node, host
    network), ``tasks`` polled every 50 ms until the task ended, ``service_logs`` read once to
    the end (stdout, written to fd 1 for the line count), ``remove_service``. The node removes
    the ended task's container a moment later: ``measure`` waits for that, outside the time.
    """

    in_process = True
    ENDED = frozenset({"complete", "failed", "rejected", "shutdown", "remove", "orphaned"})

    def __init__(self, url: str | None, worker_hostname: str) -> None:
        self.api = docker_client(url).api
        self.constraints = [f"node.hostname=={worker_hostname}"]

    def run(
        self, job: Job, labels: dict[str, str], keep: bool = True, instance: Any = None
    ) -> dict[str, Any]:
        import docker.types as types

        template = types.TaskTemplate(
            container_spec=types.ContainerSpec(
                IMAGE,
                args=["python", "-c", job.script],  # keeps the image's entrypoint
                env=[f"{k}={v}" for k, v in raw_pipes_env().items()],
                labels=labels,
                init=True,
            ),
            restart_policy=types.RestartPolicy(condition="none"),
            placement=types.Placement(constraints=self.constraints),
            networks=["host"],
        )
        cpu_before = cpu_seconds()
        started = time.perf_counter()
        service = self.api.create_service(
            template,
            name=f"bench-raw-{uuid.uuid4().hex[:12]}",
            labels=labels,
            mode=types.ServiceMode("replicated-job", replicas=1),
        )["ID"]
        state, code = "new", None
        try:
            deadline = time.monotonic() + 600
            while state not in self.ENDED and time.monotonic() < deadline:
                time.sleep(0.05)
                tasks = self.api.tasks(filters={"service": service})
                if tasks:
                    task = max(tasks, key=lambda t: (t.get("Version") or {}).get("Index", 0))
                    status = task.get("Status") or {}
                    state = status.get("State", "new")
                    code = (status.get("ContainerStatus") or {}).get("ExitCode")
            for chunk in self.api.service_logs(service, stdout=True, follow=False, is_tty=False):
                sys.stdout.buffer.write(chunk)
        finally:
            self.api.remove_service(service)
        wall = time.perf_counter() - started
        ok = state == "complete" and not code
        out = {"wall": wall, "run": wall, "cpu": cpu_seconds() - cpu_before, "ok": ok}
        out["peak_rss_kib"] = proc_status_kib("VmHWM")
        if not ok:
            out["error"] = f"task {state}, exit code {code}"
        return out


@dataclass(frozen=True)
class Runner:
    """One row: what runs the job, and on which engine of the suite."""

    label: str  # as printed
    kind: str  # "pipes", "reference", "floor", "docker-py", "docker-run", "swarm", "service"
    engine: str = "local"  # a key of engines.Engines.urls: local, dind, manager, worker
    channel: str | None = None  # pipes: "mounted", "streamed", None (the default channel)
    expect: str | None = None  # pipes: the transport the run metadata must report
    sampling: bool = True  # pipes: resource-usage sampling on
    reattach: bool = True  # pipes: reattach on (the streamed channel keeps json-file logs)
    log_driver_none: bool = False  # docker run --log-driver none
    read_logs: bool = False  # docker-py: read the container's logs before removing it
    shared: bool = True  # reference: one client for all threads of runs at once
    rules: bool = False  # pipes: BENCH_RULES as the client's output rules

    @property
    def network(self) -> str:
        return "host" if self.engine == "worker" else "none"


# key -> runner. The order is the table's.
RUNNERS = {
    "auto": Runner("pipes-docker default (auto channel)", "pipes"),
    "mounted": Runner("pipes-docker mounted", "pipes", channel="mounted"),
    "mounted-nostats": Runner(
        "pipes-docker mounted, stats sampling off", "pipes", channel="mounted", sampling=False
    ),
    "mounted-rules": Runner(
        "pipes-docker mounted, 3 output rules", "pipes", channel="mounted", rules=True
    ),
    "streamed": Runner("pipes-docker streamed", "pipes", channel="streamed"),
    "streamed-noreattach": Runner(
        "pipes-docker streamed, reattach=False", "pipes", channel="streamed", reattach=False
    ),
    "tcp": Runner("pipes-docker default over tcp (DinD)", "pipes", "dind", expect="streamed"),
    "reference": Runner("dagster-docker (reference)", "reference", shared=False),
    "reference-shared": Runner("dagster-docker, one client for all threads", "reference"),
    "reference-tcp": Runner("dagster-docker reference over tcp (DinD)", "reference", "dind"),
    "docker-py": Runner("docker-py create/start/wait/remove", "docker-py"),
    "docker-py-logs": Runner(
        "docker-py create/start/wait/logs/remove", "docker-py", read_logs=True
    ),
    "docker-run": Runner("docker run --rm", "docker-run"),
    "docker-run-nolog": Runner(
        "docker run --rm --log-driver none", "docker-run", log_driver_none=True
    ),
    "docker-run-tcp": Runner("docker run --rm (DinD)", "docker-run", "dind"),
    "docker-run-nolog-tcp": Runner(
        "docker run --rm --log-driver none (DinD)", "docker-run", "dind", log_driver_none=True
    ),
    "floor": Runner("floor: same work in-process", "floor"),
    "swarm": Runner("pipes-docker Swarm", "swarm", "manager"),
    "swarm-single": Runner(
        "pipes-docker single host (the worker node), streamed", "pipes", "worker", "streamed"
    ),
    "swarm-raw": Runner("raw docker service create", "service", "manager"),
}
# Names of older versions of the bench, still accepted on the command line.
ALIASES = {
    "pipes": ("auto", "mounted", "mounted-nostats", "streamed", "streamed-noreattach"),
    "raw": ("docker-run",),
    "raw-nolog": ("docker-run-nolog",),
}


def make_runner(key: str, job: Job, spec: dict[str, Any], concurrent: int = 0) -> Any:
    """The runner ``key`` (see ``RUNNERS``) for ``job``; ``concurrent``: runs at once.

    ``spec["urls"]`` maps the runner's engine to its address; ``spec["swarm_worker"]`` is the
    Swarm worker node's hostname.
    """
    runner = RUNNERS[key]
    url = spec.get("urls", {}).get(runner.engine)
    if runner.kind == "pipes":
        return PipesDockerRunner(runner, url)
    if runner.kind == "reference":  # it reads DOCKER_HOST, which measure sets for the worker
        return ReferenceRunner(client_per_run=concurrent > 0 and not runner.shared)
    if runner.kind == "docker-py":
        return DockerPyRunner(url, pool_size=concurrent, read_logs=runner.read_logs)
    if runner.kind == "docker-run":
        return DockerRunRunner(url, runner.log_driver_none)
    if runner.kind == "swarm":
        return SwarmRunner(url, spec["swarm_worker"])
    if runner.kind == "service":
        return ServiceRunner(url, spec["swarm_worker"])
    return FloorRunner(job)
