"""An in-memory :class:`~pipes_docker.swarm.engine.SwarmEngine` for unit tests.

A Swarm of fake nodes. Each service's one task is played by a Python callable, its *behaviour*,
run on a thread once the task is scheduled on a node that matches its constraints and has its
image:

    def behaviour(spec: ServiceSpec, task: FakeTask) -> int: ...

``task`` reads the files its configs carry (templated configs rendered as a node does), writes
to stdout and stderr (kept as the json-file log driver keeps them: a line longer than 16 KiB in
pieces), and tells the behaviour when its service was removed. The logs come back framed as the
manager sends them, in random chunk sizes. ``follow_limit`` makes the live log stream stop
delivering after that many bytes, as a lagging or broken stream does; the read after the task's
end must then deliver the rest.
"""

from __future__ import annotations

import itertools
import random
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from dagster_pipes import decode_param

from pipes_docker.errors import PipesDockerLaunchError
from pipes_docker.swarm.engine import ServiceConfig, ServiceSpec, SwarmObject, TaskStatus

from .fakes import STDERR, STDOUT, FakeStream, frame, settle

SwarmBehaviour = Callable[[ServiceSpec, "FakeTask"], int]

CONFIG_CAP = 500 * 1024  # swarmkit's MaxConfigSize
JSON_FILE_PIECE = 16 * 1024
_ids = itertools.count(1)


def _id(kind: str) -> str:
    return f"{kind}{next(_ids):020d}"


@dataclass(frozen=True)
class FakeNode:
    id: str
    hostname: str
    role: str = "worker"
    labels: Mapping[str, str] = field(default_factory=dict)
    images: frozenset[str] = frozenset({"job:1"})

    def matches(self, constraint: str) -> bool:
        key, op, value = re.split(r"(==|!=)", constraint.replace(" ", ""), maxsplit=1)
        if key == "node.role":
            actual = self.role
        elif key == "node.hostname":
            actual = self.hostname
        elif key.startswith("node.labels."):
            actual = self.labels.get(key.removeprefix("node.labels."), "")
        else:
            raise AssertionError(f"the fake does not know constraint {constraint!r}")
        return (actual == value) == (op == "==")


@dataclass
class FakeTask:
    """One task: what the behaviour sees, and what tests inspect afterwards."""

    id: str
    service: FakeService
    node: FakeNode | None = None
    state: str = "pending"
    error: str | None = None
    exit_code: int | None = None
    removed_from_service: threading.Event = field(default_factory=threading.Event)
    log: list[bytes] = field(default_factory=list)  # frames, as the log driver kept them

    @property
    def spec(self) -> ServiceSpec:
        return self.service.spec

    @property
    def env(self) -> Mapping[str, str]:
        return self.spec.env

    def read_file(self, path: str) -> bytes:
        """A file a config put at ``path``; a templated one is rendered from the others."""
        by_target = {config.target: config for config in self.spec.configs}
        config = by_target[path]
        if not config.templated:
            return config.data
        reference = rb'\{\{config "([^"]+)"\}\}'
        assert re.fullmatch(rb"(" + reference + rb")*", config.data), "only {{config}} is faked"
        return re.sub(reference, lambda match: by_target[match.group(1).decode()].data, config.data)

    def stdout(self, data: str | bytes) -> None:
        self._write(STDOUT, data)

    def stderr(self, data: str | bytes) -> None:
        self._write(STDERR, data)

    def _write(self, stream_id: int, data: str | bytes) -> None:
        raw = data.encode() if isinstance(data, str) else data
        # json-file keeps each line as an entry, a long one in 16 KiB pieces.
        for line in raw.splitlines(keepends=True):
            for start in range(0, len(line), JSON_FILE_PIECE):
                self.service.append(self, frame(stream_id, line[start : start + JSON_FILE_PIECE]))

    def status(self) -> TaskStatus:
        return TaskStatus(
            id=self.id,
            state=self.state,
            message=self.state,
            error=self.error,
            node_id=self.node.id if self.node else "",
            container_id=f"container-of-{self.id}" if self.node else "",
            exit_code=self.exit_code,
        )


@dataclass
class FakeService:
    id: str
    spec: ServiceSpec
    config_ids: Sequence[str]
    engine: FakeSwarmEngine
    created: datetime = field(default_factory=lambda: datetime.now(UTC))
    task: FakeTask | None = None
    followers: list[tuple[FakeStream, list[int]]] = field(default_factory=list)
    removed: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def append(self, task: FakeTask, data: bytes) -> None:
        with self._lock:
            task.log.append(data)
            for stream, budget in self.followers:
                if budget[0] >= len(data):
                    budget[0] -= len(data)
                    stream.push(data)
                else:
                    budget[0] = -1  # a stream that stopped delivering stays stopped


class FakeSwarmEngine:
    """Implements ``SwarmEngine`` in memory and records every call in ``ops``.

    Args:
        behaviour: Plays every task (default: exits 0 at once).
        nodes: The Swarm's nodes (default: a manager and a worker, both with image ``job:1``).
        follow_limit: Bytes the live log stream delivers before it stops delivering.
        schedule_delay: Seconds between a service's creation and its task starting.
        start_failure: ``(exit code, error)`` of a task whose container cannot start (its
            command is missing, say): the node reports it failed, with that code and error.
        kept_from: The index of the first log entry a read from the start still finds (the
            node's log driver rotated the ones before away).
        seed: Seeds the random chunk sizes of the log streams.
    """

    def __init__(
        self,
        behaviour: SwarmBehaviour | None = None,
        *,
        nodes: Sequence[FakeNode] | None = None,
        follow_limit: int | None = None,
        schedule_delay: float = 0.0,
        start_failure: tuple[int, str] | None = None,
        kept_from: int = 0,
        seed: int = 0,
    ) -> None:
        self.start_failure = start_failure
        self.kept_from = kept_from
        self.behaviour = behaviour or (lambda spec, task: 0)
        self.nodes = list(
            nodes
            or [FakeNode("node-m", "manager-1", role="manager"), FakeNode("node-w", "worker-1")]
        )
        self.follow_limit = follow_limit
        self.schedule_delay = schedule_delay
        self.rng = random.Random(seed)
        self.services: dict[str, FakeService] = {}
        self.configs: dict[str, tuple[ServiceConfig, Mapping[str, str], datetime]] = {}
        self._ops: list[str] = []
        # The environment each image sets, as the manager knows it (image_env).
        self.image_envs: dict[str, Mapping[str, str]] = {}
        self.behaviour_errors: list[BaseException] = []
        self._lock = threading.Lock()

    # -- what tests inspect ---------------------------------------------------------------------

    @property
    def only(self) -> FakeTask:
        (service,) = self.services.values()
        assert service.task is not None
        return service.task

    @property
    def ops(self) -> list[str]:
        """The calls made, in order, once background removals have ended."""
        settle()
        return self._ops

    @property
    def live_services(self) -> list[str]:
        settle()
        return [s.id for s in self.services.values() if not s.removed]

    @property
    def live_configs(self) -> list[str]:
        settle()
        return list(self.configs)

    # -- SwarmEngine ----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        return "unix:///fake/swarm-manager.sock"

    @property
    def source(self) -> str:
        return "docker_client"

    def service_mode(self) -> str:
        return "replicated-job"

    def create_config(self, config: ServiceConfig, labels: Mapping[str, str]) -> str:
        self._ops.append(f"create_config {config.name}")
        if not config.data:
            raise PipesDockerLaunchError(
                f"config {config.name}: config data must be larger than 0 bytes", image=""
            )
        if len(config.data) > CONFIG_CAP:
            raise PipesDockerLaunchError(
                f"config {config.name} is {len(config.data)} bytes, over the 500 KiB cap",
                image="",
                container_id=None,
            )
        config_id = _id("config")
        with self._lock:
            self.configs[config_id] = (config, dict(labels), datetime.now(UTC))
        return config_id

    def create_service(self, spec: ServiceSpec, config_ids: Sequence[str]) -> str:
        self._ops.append(f"create_service {spec.name}")
        for config_id in config_ids:
            assert config_id in self.configs, f"config {config_id} does not exist"
        service = FakeService(_id("service"), spec, list(config_ids), self)
        with self._lock:
            self.services[service.id] = service
        service.task = FakeTask(_id("task"), service)
        threading.Thread(target=self._schedule, args=(service.task,), daemon=True).start()
        return service.id

    def _schedule(self, task: FakeTask) -> None:
        time.sleep(self.schedule_delay)
        constraints = task.spec.options.get("constraints") or []
        nodes = [n for n in self.nodes if all(n.matches(c) for c in constraints)]
        if not nodes:
            task.error = (
                "no suitable node (scheduling constraints not satisfied on"
                f" {len(self.nodes)} nodes)"
            )
            return
        task.node = nodes[0]
        if task.spec.image not in task.node.images:
            task.state, task.error = "rejected", f"No such image: {task.spec.image}"
            return
        if self.start_failure is not None:
            task.exit_code, task.error = self.start_failure
            task.state = "failed"
            return
        task.state = "running"
        try:
            code = self.behaviour(task.spec, task)
        except BaseException as exc:
            self.behaviour_errors.append(exc)
            code = 1
        if task.removed_from_service.is_set():
            task.state, task.exit_code = "shutdown", code
        else:
            task.exit_code = code
            task.state = "complete" if code == 0 else "failed"
            if code != 0:
                task.error = f"task: non-zero exit ({code})"

    def task(self, service_id: str) -> TaskStatus | None:
        service = self.services.get(service_id)
        if service is None or service.removed or service.task is None:
            return None
        return service.task.status()

    def task_by_id(self, task_id: str) -> TaskStatus | None:
        for service in self.services.values():
            task = service.task
            if task is not None and task.id == task_id:
                # A removed service's task goes once its behaviour has ended.
                if service.removed and task.state != "running":
                    return None
                return task.status()
        return None

    def logs(self, service_id: str, *, follow: bool) -> FakeStream:
        self._ops.append(f"logs {'follow' if follow else 'once'}")
        service = self.services[service_id]
        assert not service.removed, "the manager has no logs of a removed service"
        stream = FakeStream(self.rng)
        with service._lock:
            kept = list(service.task.log) if service.task else []
            if follow:
                budget = [self.follow_limit if self.follow_limit is not None else 1 << 62]
                for data in kept:
                    if budget[0] >= len(data):
                        budget[0] -= len(data)
                        stream.push(data)
                    else:
                        budget[0] = -1
                service.followers.append((stream, budget))
            else:
                for data in kept[self.kept_from :]:
                    stream.push(data)
                stream.end()
        return stream

    def node_name(self, node_id: str) -> str:
        return next((n.hostname for n in self.nodes if n.id == node_id), node_id)

    def remove_service(self, service_id: str) -> None:
        self._ops.append("remove_service")
        service = self.services.get(service_id)
        if service is None or service.removed:
            return
        service.removed = True
        if service.task is not None:
            service.task.removed_from_service.set()
        for stream, _ in service.followers:
            stream.end()

    def remove_config(self, config_id: str) -> None:
        self._ops.append("remove_config")
        for service in self.services.values():
            if config_id in service.config_ids and not service.removed:
                raise AssertionError(f"config {config_id} is in use by service {service.id}")
        with self._lock:
            self.configs.pop(config_id, None)

    def service(self, service_id: str) -> SwarmObject | None:
        service = self.services.get(service_id)
        if service is None or service.removed:
            return None
        return _listed(service)

    def image_env(self, image: str) -> Mapping[str, str]:
        return dict(self.image_envs.get(image, {}))

    def list_services(self, labels: Mapping[str, str]) -> Sequence[SwarmObject]:
        return [
            _listed(s)
            for s in self.services.values()
            if not s.removed and _has(s.spec.labels, labels)
        ]

    def list_configs(self, labels: Mapping[str, str]) -> Sequence[SwarmObject]:
        return [
            SwarmObject(config_id, config.name, config_labels, created)
            for config_id, (config, config_labels, created) in self.configs.items()
            if _has(config_labels, labels)
        ]


def _listed(service: FakeService) -> SwarmObject:
    spec = service.spec
    return SwarmObject(service.id, spec.name, spec.labels, service.created, image=spec.image)


def _has(labels: Mapping[str, str], wanted: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in wanted.items())


def swarm_job(
    *,
    metadata: Mapping[str, Any] | None = None,
    stdout: Sequence[str] = (),
    stderr: Sequence[str] = (),
    exit_code: int = 0,
) -> SwarmBehaviour:
    """A task that speaks Pipes over stderr: opens, reports one materialization, closes."""

    def behaviour(spec: ServiceSpec, task: FakeTask) -> int:
        params = decode_param(task.env["DAGSTER_PIPES_CONTEXT"])
        context = (
            params["data"] if "data" in params else orjson.loads(task.read_file(params["path"]))
        )
        send(
            task,
            ("opened", {"extras": {}}),
            (
                "report_asset_materialization",
                {
                    "asset_key": context["asset_keys"][0],
                    "metadata": {
                        key: {"raw_value": value, "type": "__infer__"}
                        for key, value in (metadata or {}).items()
                    },
                    "data_version": None,
                },
            ),
        )
        for line in stdout:
            task.stdout(line + "\n")
        for line in stderr:
            task.stderr(line + "\n")
        send(task, ("closed", {}))
        return exit_code

    return behaviour


def send(task: FakeTask, *messages: tuple[str, Mapping[str, Any]]) -> None:
    for method, body in messages:
        task.stderr(
            orjson.dumps({"__dagster_pipes_version": "0.1", "method": method, "params": body})
            + b"\n"
        )
