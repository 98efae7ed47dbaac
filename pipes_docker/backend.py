"""The backend seam: what a run needs from the thing that runs its job.

A run goes through one pipeline (:mod:`pipes_docker.pipeline`) whatever runs the job: a
container on one engine, or a Swarm service's task on whichever node its manager picks. A
:class:`Backend` says only what differs between them: how a job is made (:meth:`Backend.create`)
and found again after a restart (:meth:`Backend.find`), and a :class:`Job` how it is started,
followed, waited for, stopped and removed. What they hand back are the small values below.

The values shared with the channels (:class:`Mount`, :class:`ContainerFile`) and the byte
stream both engines read (:class:`OutputStream`) live here too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pipes_docker.values import frozen

if TYPE_CHECKING:
    from pipes_docker.channels.base import OpenChannel, PipesDockerChannel
    from pipes_docker.messages import ByteSink
    from pipes_docker.options import OptionRules

__all__ = [
    "Backend",
    "ContainerFile",
    "FoundJob",
    "Job",
    "JobExit",
    "JobSpec",
    "Mount",
    "OutputFollower",
    "OutputStream",
    "OwnedObject",
    "ResourceSampler",
    "RunImage",
    "RunTarget",
]


@frozen
class Mount:
    """A host path the container sees at ``container_path``."""

    host_path: str
    container_path: str
    read_only: bool = False


@frozen
class ContainerFile:
    """A file put into the job before it starts (copied into a container; a Swarm config).

    Works on every engine, shared filesystem or not. Parent directories are created as needed,
    world-readable, owned by root.
    """

    path: str
    data: bytes
    mode: int = 0o644


class OutputStream(Protocol):
    """A byte stream read in chunks; ``read`` returns ``b""`` at the end."""

    def read(self, size: int) -> bytes: ...

    def close(self) -> None: ...


class ResourceSampler(Protocol):
    """Samples a job's resource use while it runs."""

    def stop(self) -> Mapping[str, int | float]:
        """Stop sampling; the figures the engine reported (those it did not are left out)."""
        ...


@frozen
class RunTarget:
    """What a run launched, as errors, logs and metadata name it.

    ``str()`` gives ``container 1a2b3c4d5e6f`` or ``service pipes-1a2b-step-9f on node worker-1``.
    """

    kind: Literal["container", "service"]
    id: str
    name: str = ""
    node: str | None = None

    def __str__(self) -> str:
        if self.kind == "container":
            return f"container {self.id[:12]}"
        where = f" on node {self.node}" if self.node else ""
        return f"service {self.name or self.id[:12]}{where}"


@frozen
class RunImage:
    """A run's image as its backend will use it.

    ``id`` is set when the image was made sure of before the run (pulled, or inspected for its
    environment). Otherwise the engine is trusted to have it, and ``ensure`` (pull it as the
    client's pull policy says, or explain why not) is called only if it says otherwise: the
    common case, an image already there, costs no round trip before the job is made.
    """

    name: str
    id: str | None = None
    # Holds the registry credentials, if any: kept out of repr.
    ensure: Callable[[], object] | None = field(default=None, repr=False)


@frozen
class JobSpec:
    """One run's job, merged and checked, in terms every backend understands.

    ``options`` are the backend's own keywords (``container_kwargs``, ``service_kwargs``),
    already merged; ``keep_output`` asks the engine to keep the job's output so that it can be
    read again after a reattach; ``image`` says how to make sure of the image if the engine
    has none (:class:`RunImage`).
    """

    image: RunImage
    name: str
    command: str | Sequence[str] | None
    env: Mapping[str, str]
    labels: Mapping[str, str]
    options: Mapping[str, Any] = field(default_factory=dict)
    mounts: Sequence[Mount] = ()
    files: Sequence[ContainerFile] = ()
    keep_output: bool = False
    stop_grace_seconds: float = 20.0


@frozen
class JobExit:
    """How a job's process ended."""

    exit_code: int
    oom_killed: bool = False
    memory_limit: int | None = None
    error: str | None = None  # the engine's reason, when it adds something to the exit code
    started_at: str | None = None  # the engine's timestamps, RFC 3339
    finished_at: str | None = None


class OutputFollower(Protocol):
    """Carries a job's output into the run's sinks while the job runs.

    Made by :meth:`Job.follow` before the job starts, so nothing it writes is missed.
    """

    def job_ended(self) -> None:
        """The job is known to have ended: the stream's end is now its natural end."""

    def finish(self, idle_timeout: float) -> None:
        """Deliver the rest of the output; give up on a stream idle for ``idle_timeout``."""

    def abort(self) -> None:
        """Stop now; what has not arrived is lost (the job never started, or cannot be read)."""

    def failure(self) -> BaseException | None:
        """Why carrying the output failed, if it did: the run must not pass as a success."""


class Job(Protocol):
    """One job on a backend, made (or found again) and driven by the launcher."""

    @property
    def target(self) -> RunTarget:
        """What runs the job; a Swarm task's node is known once it started."""

    def follow(self, stdout: ByteSink, stderr: ByteSink) -> OutputFollower:
        """Start carrying the job's output (from its very start) into the sinks."""

    def start(self) -> None:
        """Start the job; return once it runs (a Swarm task: once its node started it).

        A job found again after a restart is already started: this returns at once.
        """

    def wait(self, timeout: float) -> JobExit | None:
        """The job's exit, or ``None`` while it still runs after ``timeout`` seconds."""

    def stop(self, grace_seconds: float) -> None:
        """SIGTERM, then SIGKILL after ``grace_seconds``; return once the job has ended."""

    def remove(self) -> None:
        """Remove everything made for the job; what is gone already is fine."""

    def usage(self) -> ResourceSampler:
        """Start sampling the running job's resource use."""

    def metadata(self) -> Mapping[str, Any]:
        """What this backend adds to the run's metadata (service, task, node...)."""

    def archive(self, path: str) -> OutputStream | None:
        """A tar stream of ``path`` (a file or a directory) in the ended job's filesystem;
        ``None`` when there is no such path. Only where :meth:`Backend.check_copy_out`
        allows it."""


@frozen
class FoundJob:
    """A job an earlier attempt of the step launched, as the backend finds it now."""

    job: Job
    image: str
    labels: Mapping[str, str]
    running: bool
    exit_code: int | None  # None while it runs


@frozen
class OwnedObject:
    """Something of ours on a backend (a container, a service, a config), for the sweep.

    ``parent`` names the object it was made for (a config's service): it goes with it.
    """

    id: str
    labels: Mapping[str, str]
    created: datetime | None
    name: str = ""
    parent: str | None = None


class Backend(Protocol):
    """What runs jobs: one engine's containers, or a Swarm's services."""

    @property
    def address(self) -> str:
        """Where the engine (the manager) is, without credentials."""

    @property
    def engine_source(self) -> str:
        """How the engine was chosen: ``env DOCKER_HOST``, ``context NAME (...)``,
        ``default socket``, or ``docker_client`` when the user gave the client."""

    @property
    def kind(self) -> str:
        """What a job is here, in words: ``"container"``, ``"Swarm task"``."""

    @property
    def options(self) -> OptionRules:
        """How this backend's own keywords are checked and merged."""

    def prepare_image(
        self, image: str, registry: Mapping[str, str] | None = None, *, now: bool = False
    ) -> RunImage:
        """The image as the run will use it, pulled as the client's pull policy says (with the
        run's ``registry`` credentials over the client's): at once when the policy is
        ``always`` or ``now`` is set, else only if the engine turns out not to have it."""

    def image_env(self, image: RunImage) -> Mapping[str, str]:
        """The environment the image sets (``ENV``), as far as the backend can see it."""

    def image_metadata(self, image: RunImage) -> Mapping[str, Any]:
        """What the run's metadata says of the image (its id, its registry digest); asked while
        the job runs, so a lookup it needs costs the run nothing."""

    def open_channel(
        self,
        channel: PipesDockerChannel,
        *,
        image: RunImage,
        warn: Callable[[str], None],
    ) -> AbstractContextManager[OpenChannel]:
        """Open ``channel`` for a job of this backend."""

    def create(self, spec: JobSpec) -> Job:
        """Make the job (not started yet)."""

    def find(self, job_id: str) -> FoundJob | None:
        """A job launched earlier, by the id recorded at its launch; ``None`` when gone."""

    def lease(self, found: FoundJob, labels: Mapping[str, str]) -> Callable[[], None]:
        """Mark ``found`` as owned by this live process (the sweep leaves it alone).

        Returns the call that releases the lease.
        """

    def owned(self, labels: Mapping[str, str]) -> Sequence[OwnedObject]:
        """Everything of ours with these labels, parents before what was made for them."""

    def remove_owned(self, owned: OwnedObject) -> None:
        """Remove one thing :meth:`owned` listed."""

    def check_copy_out(self) -> None:
        """Refuse a run that asks for files back where the job's filesystem is out of reach
        (``PipesDockerFilesError``)."""
