"""DockerEngine against a fake docker-py client: error translation and the retry policy."""

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import docker.api.client
import docker.errors
import paramiko
import pytest
import requests
import urllib3.exceptions

from pipes_docker.backend import ContainerFile
from pipes_docker.container.engine import ContainerSpec
from pipes_docker.dockerapi.archives import tar_files
from pipes_docker.dockerapi.containers import DockerEngine
from pipes_docker.errors import (
    PipesDockerEngineError,
    PipesDockerImageError,
    PipesDockerLaunchError,
)
from pipes_docker.retry import MAX_ATTEMPTS

from .docker_fakes import CREATED, FakeDockerClient, FakeDockerContainer, Script, api_error


def spec() -> ContainerSpec:
    return ContainerSpec(image="job:1", name="pipes-x", command=None, env={}, labels={})


PROBE_LABELS = {"io.pipes-docker.orchestrator-pid": "42", "io.pipes-docker.probe": "true"}


def labelled_spec(run: str) -> ContainerSpec:
    return ContainerSpec(image="job:1", name="pipes-x", command=None, env={}, labels={"run": run})


def refused() -> requests.exceptions.ConnectionError:
    return requests.exceptions.ConnectionError("Connection refused")


def test_connection_errors_are_retried_until_the_call_succeeds() -> None:
    client = FakeDockerClient()
    create = Script(refused(), refused(), CREATED)
    client.api.create_container = create  # type: ignore[attr-defined]

    created = DockerEngine(client).create(spec())  # type: ignore[arg-type]

    assert created.id == FakeDockerContainer.id
    assert create.calls == 3


def test_each_retry_is_logged_naming_the_call_and_counting_the_first_attempt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FakeDockerClient()
    create = Script(refused(), refused(), CREATED)
    client.api.create_container = create  # type: ignore[attr-defined]

    with caplog.at_level(logging.WARNING, logger="pipes_docker.retry"):
        DockerEngine(client).create(spec())  # type: ignore[arg-type]

    said = [record.getMessage() for record in caplog.records]
    assert len(said) == 2, said
    assert said[0].startswith(f"Docker engine call create failed (attempt 1 of {MAX_ATTEMPTS})")
    assert f"(attempt 2 of {MAX_ATTEMPTS})" in said[1]


def test_an_ssh_channel_refused_for_a_moment_is_retried_like_a_refused_connection() -> None:
    client = FakeDockerClient()
    wait = Script(paramiko.ChannelException(2, "Connect failed"), {"StatusCode": 0})
    client.api.wait = wait  # type: ignore[attr-defined]
    client.api.inspect_container = Script({"State": {}})  # type: ignore[attr-defined]

    exit_ = DockerEngine(client).wait(FakeDockerContainer.id, 1.0)  # type: ignore[arg-type]

    assert exit_ is not None and exit_.exit_code == 0
    assert wait.calls == 2


def test_an_engine_that_stays_unreachable_fails_naming_its_address() -> None:
    client = FakeDockerClient()
    create = Script(refused())
    client.api.create_container = create  # type: ignore[attr-defined]

    with pytest.raises(PipesDockerEngineError, match="Cannot reach the Docker engine at"):
        DockerEngine(client).create(spec())  # type: ignore[arg-type]
    assert create.calls == MAX_ATTEMPTS


def test_client_errors_are_not_retried() -> None:
    client = FakeDockerClient()
    create = Script(api_error(400, "invalid mount config"))
    client.api.create_container = create  # type: ignore[attr-defined]

    with pytest.raises(PipesDockerLaunchError, match="invalid mount config"):
        DockerEngine(client).create(spec())  # type: ignore[arg-type]
    assert create.calls == 1


def name_in_use() -> docker.errors.APIError:
    return api_error(
        409,
        'Conflict. The container name "/pipes-x" is already in use by container "c0ffee".'
        " You have to remove (or rename) that container to be able to reuse that name.",
    )


def test_a_create_whose_answer_was_lost_adopts_its_container_once_the_engine_has_made_it() -> None:
    # The first create times out while the engine goes on making the container. The engine
    # holds the name from the start, but knows the container only once it is made: until
    # then the retry's conflict cannot be inspected, and the retry is tried again.
    client = FakeDockerClient()
    create = Script(requests.exceptions.ReadTimeout("read timed out"), name_in_use())
    client.api.create_container = create  # type: ignore[attr-defined]
    ours = FakeDockerContainer()
    ours.labels = {"run": "r1", "from-the-image": "yes"}  # the image's labels join ours
    get = Script(docker.errors.NotFound("No such container: pipes-x"), ours)
    client.containers.get = get  # type: ignore[attr-defined]

    created = DockerEngine(client).create(labelled_spec("r1"))  # type: ignore[arg-type]

    assert created.id == FakeDockerContainer.id
    assert (create.calls, get.calls) == (3, 2)


def test_a_name_taken_by_a_container_not_of_this_run_is_refused_naming_it() -> None:
    client = FakeDockerClient()
    create = Script(name_in_use())
    client.api.create_container = create  # type: ignore[attr-defined]
    theirs = FakeDockerContainer()
    theirs.labels = {"run": "r2"}
    client.containers.get = Script(theirs)  # type: ignore[attr-defined]

    with pytest.raises(PipesDockerLaunchError, match="'pipes-x' already exists and is not"):
        DockerEngine(client).create(labelled_spec("r1"))  # type: ignore[arg-type]
    assert create.calls == 1


def made_but_answer_lost(names: list[str]) -> Callable[..., dict[str, str]]:
    """A ``create_container`` whose first call makes the container but times out; a retry
    conflicts with the name it took. Each call's name is appended to ``names``."""

    def create(image: str, **kwargs: Any) -> dict[str, str]:
        names.append(kwargs["name"])
        if len(names) == 1:
            raise requests.exceptions.ReadTimeout("read timed out")
        raise api_error(409, f'Conflict. The container name "/{kwargs["name"]}" is already in use')

    return create


def test_a_probe_whose_create_answer_was_lost_reads_and_removes_the_container_it_made() -> None:
    names: list[str] = []
    create = made_but_answer_lost(names)

    def get(name: str) -> FakeDockerContainer:
        assert name == names[0]
        probe = FakeDockerContainer()
        probe.labels = {**PROBE_LABELS, "from-the-image": "yes"}
        return probe

    removed = Script(None)
    client = FakeDockerClient(
        create_container=create,
        create_host_config=lambda **kwargs: kwargs,
        get_archive=Script(
            ([tar_files([ContainerFile("/pipes-docker-probe/token", b"seen")])], {})
        ),
        remove_container=removed,
    )
    client.containers.get = get  # type: ignore[attr-defined]

    seen = DockerEngine(client).probe_bind_mount(  # type: ignore[arg-type]
        "job:1", "/tmp/x", "token", PROBE_LABELS
    )

    assert seen == b"seen"
    assert names[0].startswith("pipes-probe-") and names == [names[0]] * 2
    assert removed.calls == 1 and removed.kwargs == [{"force": True, "v": True}]


def in_progress() -> docker.errors.APIError:
    return api_error(409, "removal of container pipes-x is already in progress")


@pytest.mark.parametrize(
    "after",
    [docker.errors.NotFound("No such container: pipes-x"), None],
    ids=["the other removal ended", "the other removal failed: removed by this one"],
)
def test_a_removal_already_under_way_is_waited_for(after: object) -> None:
    remove = Script(in_progress(), in_progress(), after)
    client = FakeDockerClient(remove_container=remove)

    DockerEngine(client).remove(FakeDockerContainer.id)  # type: ignore[arg-type]

    assert remove.calls == 3


def test_a_removal_under_way_for_too_long_is_an_error_naming_the_container(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pipes_docker.dockerapi.containers._REMOVAL_WAIT_SECONDS", 0.3)
    client = FakeDockerClient(remove_container=Script(in_progress()))

    with pytest.raises(PipesDockerEngineError, match="still removing container c0ffeec0ffee"):
        DockerEngine(client).remove(FakeDockerContainer.id)  # type: ignore[arg-type]


def test_a_probe_container_that_cannot_be_removed_still_gives_its_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = FakeDockerClient(
        create_container=Script(CREATED),
        create_host_config=lambda **kwargs: kwargs,
        get_archive=Script(
            ([tar_files([ContainerFile("/pipes-docker-probe/token", b"seen")])], {})
        ),
        remove_container=Script(api_error(400, "cannot remove: device or resource busy")),
    )

    with caplog.at_level(logging.WARNING):
        seen = DockerEngine(client).probe_bind_mount(  # type: ignore[arg-type]
            "job:1", "/tmp/x", "token", PROBE_LABELS
        )

    assert seen == b"seen"
    assert "Could not remove probe container pipes-probe-" in caplog.text


def test_a_lease_whose_create_answer_was_lost_is_the_one_the_engine_made() -> None:
    names: list[str] = []
    create = made_but_answer_lost(names)
    lease = FakeDockerContainer()
    lease.labels = {"io.pipes-docker.lease-for": "c0ffee", "from-the-image": "yes"}
    client = FakeDockerClient(create_container=create, create_host_config=lambda **kw: kw)
    client.containers.get = Script(lease)  # type: ignore[attr-defined]

    lease_id = DockerEngine(client).create_lease(  # type: ignore[arg-type]
        "c0ffee" * 10, "job:1", {"io.pipes-docker.lease-for": "c0ffee"}
    )

    assert lease_id == FakeDockerContainer.id
    assert names[0].startswith("pipes-lease-c0ffeec0ffee-") and names == [names[0]] * 2


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_and_rate_limits_on_create_are_retried(status: int) -> None:
    client = FakeDockerClient()
    create = Script(api_error(status, "try again"), CREATED)
    client.api.create_container = create  # type: ignore[attr-defined]

    DockerEngine(client).create(spec())  # type: ignore[arg-type]
    assert create.calls == 2


def test_missing_image_on_create_is_an_image_error_naming_it() -> None:
    client = FakeDockerClient()
    client.api.create_container = Script(  # type: ignore[attr-defined]
        docker.errors.ImageNotFound("No such image: job:1")
    )

    with pytest.raises(PipesDockerImageError, match="'job:1'"):
        DockerEngine(client).create(spec())  # type: ignore[arg-type]


def stream(*events: dict[str, Any]) -> Callable[[], Iterator[dict[str, Any]]]:
    read: list[dict[str, Any]] = []

    def events_iter() -> Iterator[dict[str, Any]]:
        for event in events:
            read.append(event)
            yield event

    events_iter.read = read  # type: ignore[attr-defined]
    return events_iter


def test_an_error_inside_the_pull_stream_is_surfaced_after_reading_it_all() -> None:
    events = stream(
        {"status": "Pulling fs layer"},
        {"error": "unexpected EOF", "errorDetail": {"message": "unexpected EOF"}},
        {"status": "trailing event"},
    )
    client = FakeDockerClient(pull=Script(events))

    with pytest.raises(PipesDockerImageError, match=r"'job:1'.*unexpected EOF"):
        DockerEngine(client).pull("job:1", None)  # type: ignore[arg-type]
    assert len(events.read) == 3  # type: ignore[attr-defined]


def test_a_registry_refusal_is_an_image_error_and_is_not_retried() -> None:
    pull = Script(api_error(500, "unauthorized: authentication required"))
    client = FakeDockerClient(pull=pull)

    with pytest.raises(PipesDockerImageError, match="unauthorized"):
        DockerEngine(client).pull("job:1", {"username": "u", "password": "p"})  # type: ignore[arg-type]
    assert pull.calls == 1


def test_a_registry_rate_limit_is_retried() -> None:
    pull = Script(api_error(500, "toomanyrequests: slow down"), stream({"status": "done"}))
    client = FakeDockerClient(pull=pull)

    DockerEngine(client).pull("job:1", None)  # type: ignore[arg-type]
    assert pull.calls == 2


@pytest.mark.parametrize(
    ("image", "repository", "tag"),
    [
        ("job", "job", "latest"),
        ("job:1", "job", "1"),
        ("127.0.0.1:5000/team/job:2", "127.0.0.1:5000/team/job", "2"),
        ("127.0.0.1:5000/team/job", "127.0.0.1:5000/team/job", "latest"),
        ("job@sha256:abc", "job", "sha256:abc"),
    ],
)
def test_pull_splits_the_reference_into_repository_and_tag(
    image: str, repository: str, tag: str
) -> None:
    pull = Script(stream({"status": "done"}))
    seen: list[tuple[Any, ...]] = []

    def record(*args: Any, **kwargs: Any) -> Any:
        seen.append((args[0], kwargs["tag"]))
        return pull()

    DockerEngine(FakeDockerClient(pull=record)).pull(image, None)  # type: ignore[arg-type]
    assert seen == [(repository, tag)]


def test_wait_returns_none_when_the_container_is_still_running() -> None:
    timeout = requests.exceptions.ConnectionError(
        urllib3.exceptions.ReadTimeoutError(None, "/wait", "Read timed out.")  # type: ignore[arg-type]
    )
    client = FakeDockerClient(wait=Script(timeout))

    assert DockerEngine(client).wait("c0ffee", 0.1) is None  # type: ignore[arg-type]


def test_wait_reads_the_oom_flag_and_memory_limit_of_a_failed_container() -> None:
    client = FakeDockerClient(
        wait=Script({"StatusCode": 137, "Error": None}),
        inspect_container=Script(
            {"State": {"OOMKilled": True}, "HostConfig": {"Memory": 64 * 1024 * 1024}}
        ),
    )

    exit_ = DockerEngine(client).wait("c0ffee", 1)  # type: ignore[arg-type]

    assert exit_ is not None
    assert (exit_.exit_code, exit_.oom_killed, exit_.memory_limit) == (137, True, 64 << 20)


class ParamikoLikeChannel:
    """What docker-py's ssh transport hands back for an attach: recv, no read, a timeout."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.timeout: float | None = 60.0
        self.closed = False

    def recv(self, size: int) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    def settimeout(self, timeout: float | None) -> None:
        self.timeout = timeout

    def shutdown(self, how: int) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_attach_reads_a_channel_without_read_and_lifts_its_timeout() -> None:
    channel = ParamikoLikeChannel([b"abc", b"def"])
    engine = DockerEngine(FakeDockerClient(attach_socket=Script(channel)))  # type: ignore[arg-type]

    stream = engine.attach("c0ffee")

    assert channel.timeout is None  # a job silent for longer than the request timeout is fine
    assert [stream.read(10), stream.read(10), stream.read(10)] == [b"abc", b"def", b""]
    stream.close()
    assert channel.closed


def test_copy_files_sends_one_tar_with_parent_dirs() -> None:
    import io
    import tarfile

    from pipes_docker.backend import ContainerFile

    received: dict[str, Any] = {}

    def put_archive(container: str, path: str, data: bytes) -> bool:
        received.update(container=container, path=path, data=data)
        return True

    engine = DockerEngine(FakeDockerClient(put_archive=put_archive))  # type: ignore[arg-type]
    engine.copy_files(
        "c0ffee", "job:1", [ContainerFile("/a/b/c.json", b"{}"), ContainerFile("/a/d", b"x", 0o755)]
    )

    assert received["path"] == "/"
    with tarfile.open(fileobj=io.BytesIO(received["data"])) as archive:
        members = {m.name: (m.isdir(), m.mode) for m in archive}
        assert members == {
            "a": (True, 0o755),
            "a/b": (True, 0o755),
            "a/b/c.json": (False, 0o644),
            "a/d": (False, 0o755),
        }
        extracted = archive.extractfile("a/b/c.json")
        assert extracted is not None and extracted.read() == b"{}"


def test_a_bad_container_kwargs_value_is_a_launch_error_naming_what_to_fix() -> None:
    # docker-py converts mem_limit before any request: "lots" fails there, not at the engine,
    # so a client whose socket does not exist shows it.
    client = docker.DockerClient(base_url="unix:///nonexistent/docker.sock", version="1.41")
    engine = DockerEngine(client)
    bad = ContainerSpec(
        image="job:1",
        name="pipes-x",
        command=None,
        env={},
        labels={},
        options={"mem_limit": "lots"},
    )

    with pytest.raises(PipesDockerLaunchError, match="container_kwargs") as raised:
        engine.create(bad)

    assert "lots" in str(raised.value)


def test_ssh_without_paramiko_fails_at_once_naming_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What docker-py does when paramiko is not installed: the ssh adapter's name is missing.
    monkeypatch.delattr(docker.api.client, "SSHHTTPAdapter")
    monkeypatch.setenv("DOCKER_HOST", "ssh://root@127.0.0.1:1")
    started = time.monotonic()

    needs_extra = r'pip install "pipes-docker\[ssh\]"'
    with pytest.raises(PipesDockerEngineError, match=needs_extra) as raised:
        DockerEngine().image_id("job:1")

    assert not raised.value.transient
    assert time.monotonic() - started < 1.0  # not retried as if the engine were down


def test_the_env_of_an_image_id_just_inspected_costs_no_second_inspect() -> None:
    client = FakeDockerClient()
    inspect = Script(
        {"Id": "sha256:" + "ab" * 32, "RepoDigests": [], "Config": {"Env": ["PATH=/opt/bin"]}}
    )
    client.api.inspect_image = inspect  # type: ignore[attr-defined]
    engine = DockerEngine(client)  # type: ignore[arg-type]

    image_id = engine.image_id("job:1")  # the pull policy's check, before an injection
    assert image_id is not None
    assert engine.image_env(image_id) == {"PATH": "/opt/bin"}
    assert inspect.calls == 1
    # A reference may point at another image by now: it is asked again.
    assert engine.image_env("job:1") == {"PATH": "/opt/bin"}
    assert inspect.calls == 2
