"""Pull policy and registry credentials, against a real registry endpoint on loopback.

The registry (tests/integration/registry.py) serves the test image plus one tiny layer of its
own, so the image it serves has an id of its own and is truly absent until pulled. Every test
removes what it pulled and stops the server (the ``registry`` fixture's teardown checks both).
"""

from __future__ import annotations

import base64
import gc
import logging
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import docker
import docker.errors
import pytest

from pipes_docker import PipesDockerClient
from pipes_docker.dockerapi.containers import DockerEngine
from pipes_docker.errors import PipesDockerImageError
from tests.jobs import AssetRun

from .registry import (
    NONCE_PATH,
    BlobFailure,
    RegistryServer,
    registry_fixture,  # noqa: F401  (the `registry` fixture)
    saved_test_image_fixture,  # noqa: F401  (the `saved_test_image` fixture)
)

RunAsset = Callable[..., AssetRun]
MakeClient = Callable[..., PipesDockerClient]

USERNAME = "u"
PASSWORD = "p4ss-secret"

REPORT_TOKEN = f"""
from dagster_pipes import open_dagster_pipes
token = open("{NONCE_PATH}").read().strip()
print("hello from the pulled image")
with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(metadata={{"token": token}})
"""


def present(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
    except docker.errors.ImageNotFound:
        return False
    return True


def error_classes(run: AssetRun) -> list[str]:
    """The class names along the step error's cause/context chain."""
    failures = [event for event in run.result.all_events if event.is_step_failure]
    assert failures, "the step did not fail"
    names, pending = [], [failures[0].step_failure_data.error]
    while pending:
        error = pending.pop()
        if error is None:
            continue
        names.append(error.cls_name)
        pending.extend([error.cause, error.context])
    return names


def pings(registry: RegistryServer) -> int:
    """How many times the engine began a pull: each attempt first GETs ``/v2/``."""
    return len([r for r in registry.requests if r.method == "GET" and r.path in ("/v2", "/v2/")])


@contextmanager
def socket_leaks() -> Iterator[list[str]]:
    """Collect ``unclosed <socket...>`` ResourceWarnings raised inside the block (after a GC)
    instead of letting them fail whichever test the garbage collector happens to run in."""
    leaks: list[str] = []
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        yield leaks
        gc.collect()
    leaks.extend(
        str(w.message)
        for w in caught
        if issubclass(w.category, ResourceWarning) and "unclosed <socket" in str(w.message)
    )


def everything_logged(run: AssetRun) -> str:
    """The run's whole event log, rendered: user messages and Dagster's own events."""
    return "\n".join(
        f"{entry.user_message} {entry.dagster_event!r}"
        for entry in run.instance.all_logs(run.result.run_id)
    )


def test_if_not_present_pulls_a_missing_image_and_runs_it(
    make_client: MakeClient,
    run_asset: RunAsset,
    registry: RegistryServer,
    docker_client: docker.DockerClient,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert not present(docker_client, registry.reference)

    run = run_asset(
        make_client(pull_policy="if_not_present"), REPORT_TOKEN, image=registry.reference
    )

    assert run.success, run.error
    # The container ran the image the registry served: its own layer's token came back.
    assert run.metadata["token"] == registry.image.token
    assert "hello from the pulled image\n" in capsys.readouterr().out
    pulled = docker_client.images.get(registry.reference)
    assert pulled.id == registry.image.config_digest
    assert run.metadata["pipes_docker/image_id"] == pulled.id
    # A pulled image has a registry digest: the metadata names it, not only the tag.
    repository = registry.reference.rsplit(":", 1)[0]
    assert run.metadata["pipes_docker/image_digest"] in pulled.attrs["RepoDigests"]
    assert run.metadata["pipes_docker/image_digest"].startswith(f"{repository}@sha256:")
    assert registry.manifest_requests()
    assert registry.blob_requests(registry.image.config_digest)
    assert registry.blob_requests(registry.image.nonce_layer_digest)


def test_if_not_present_does_not_contact_the_registry_when_the_image_is_present(
    make_client: MakeClient,
    run_asset: RunAsset,
    registry: RegistryServer,
    docker_client: docker.DockerClient,
) -> None:
    docker_client.images.pull(registry.reference)
    registry.reset()

    run = run_asset(
        make_client(pull_policy="if_not_present"), REPORT_TOKEN, image=registry.reference
    )

    assert run.success, run.error
    assert run.metadata["token"] == registry.image.token
    assert registry.connections == 0


def test_always_pulls_even_when_the_image_is_present(
    make_client: MakeClient,
    run_asset: RunAsset,
    registry: RegistryServer,
    docker_client: docker.DockerClient,
) -> None:
    docker_client.images.pull(registry.reference)
    assert present(docker_client, registry.reference)
    registry.reset()

    run = run_asset(make_client(pull_policy="always"), REPORT_TOKEN, image=registry.reference)

    assert run.success, run.error
    assert run.metadata["token"] == registry.image.token
    # With the image present the engine only checks the manifest's digest (a HEAD on the tag)
    # and, as it is up to date, fetches no blob.
    manifests = registry.manifest_requests()
    assert len(manifests) == 1, registry.requests
    assert manifests[0].path.endswith(f"/manifests/{registry.image.tag}")
    assert not [r for r in registry.requests if r.is_blob]


def test_always_pulls_again_on_every_run(
    make_client: MakeClient, run_asset: RunAsset, registry: RegistryServer
) -> None:
    client = make_client(pull_policy="always")

    first = run_asset(client, REPORT_TOKEN, image=registry.reference)
    after_first = len(registry.manifest_requests())
    second = run_asset(client, REPORT_TOKEN, image=registry.reference)

    assert first.success, first.error
    assert second.success, second.error
    assert after_first >= 1
    assert len(registry.manifest_requests()) > after_first


def test_never_with_the_image_absent_fails_at_once_without_contacting_the_registry(
    make_client: MakeClient,
    run_asset: RunAsset,
    registry: RegistryServer,
    docker_client: docker.DockerClient,
) -> None:
    run = run_asset(make_client(pull_policy="never"), REPORT_TOKEN, image=registry.reference)

    assert not run.success
    assert registry.reference in run.error
    assert "pull_policy is 'never'" in run.error
    assert "PipesDockerImageError" in error_classes(run)
    assert registry.connections == 0, registry.requests
    assert not present(docker_client, registry.reference)


@pytest.mark.parametrize(
    "credentials",
    [None, {"username": USERNAME, "password": "wrong-" + PASSWORD}],
    ids=["no-credentials", "wrong-password"],
)
def test_registry_refuses_a_pull_without_the_right_credentials(
    make_client: MakeClient,
    run_asset: RunAsset,
    registry: RegistryServer,
    docker_client: docker.DockerClient,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    credentials: dict[str, str] | None,
) -> None:
    caplog.set_level(logging.DEBUG)
    registry.credentials = (USERNAME, PASSWORD)
    if credentials is not None:
        credentials = {"url": registry.host, **credentials}

    run = run_asset(make_client(registry=credentials), REPORT_TOKEN, image=registry.reference)

    assert not run.success
    error = run.error
    assert f"pulling image {registry.reference!r}".lower() in error.lower()
    # The engine's reason: it had no credentials for the Basic challenge, or they were refused.
    assert "no basic auth credentials" in error or "unauthorized" in error
    assert registry.requests
    assert all(not r.authorized for r in registry.requests)
    assert not [r for r in registry.requests if r.is_blob]
    assert not present(docker_client, registry.reference)
    out, err = capsys.readouterr()
    for text in (error, everything_logged(run), caplog.text, out, err):
        assert PASSWORD not in text


def test_registry_credentials_let_the_pull_through_and_are_never_shown(
    make_client: MakeClient,
    run_asset: RunAsset,
    registry: RegistryServer,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    registry.credentials = (USERNAME, PASSWORD)
    client = make_client(
        registry={"url": registry.host, "username": USERNAME, "password": PASSWORD}
    )

    run = run_asset(client, REPORT_TOKEN, image=registry.reference)

    assert run.success, run.error
    assert run.metadata["token"] == registry.image.token
    # The credentials reached the registry: the manifest and blobs were fetched with them.
    assert [r for r in registry.manifest_requests() if r.authorized]
    assert all(r.authorized for r in registry.requests if r.is_blob)
    assert registry.blob_requests(registry.image.nonce_layer_digest)
    out, err = capsys.readouterr()
    assert "hello from the pulled image" in out
    basic = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    for text in (everything_logged(run), caplog.text, out, err, repr(run.metadata)):
        assert PASSWORD not in text
        assert basic not in text


@pytest.mark.parametrize("refusal", ["wrong-password", "manifest-missing"])
def test_registry_refusal_is_an_image_error_and_is_not_retried(
    make_client: MakeClient, run_asset: RunAsset, registry: RegistryServer, refusal: str
) -> None:
    client = make_client()
    if refusal == "wrong-password":
        registry.credentials = (USERNAME, PASSWORD)
        client = make_client(
            registry={"url": registry.host, "username": USERNAME, "password": "wrong"}
        )
    else:
        registry.manifest_missing = True

    run = run_asset(client, REPORT_TOKEN, image=registry.reference)

    assert not run.success
    assert "PipesDockerImageError" in error_classes(run)
    assert pings(registry) == 1, registry.requests  # one pull attempt, not five
    assert f"Pulling image {registry.reference!r} failed" in run.error


@pytest.mark.parametrize(
    ("blob", "failure", "engine_says"),
    [
        ("layer", "corrupt", "filesystem layer verification failed"),
        ("config", "500", "error pulling image configuration"),
    ],
    ids=["corrupt-layer", "config-500"],
)
def test_blob_failing_mid_pull_fails_the_run_naming_the_image(
    make_client: MakeClient,
    run_asset: RunAsset,
    registry: RegistryServer,
    docker_client: docker.DockerClient,
    blob: str,
    failure: BlobFailure,
    engine_says: str,
) -> None:
    # A layer answering 500 is not used: the engine retries it, with back-off, for over a minute.
    image = registry.image
    digest = image.nonce_layer_digest if blob == "layer" else image.config_digest
    registry.blob_failures[digest] = failure

    with socket_leaks() as leaks:
        run = run_asset(
            make_client(pull_policy="if_not_present"), REPORT_TOKEN, image=registry.reference
        )

    assert not run.success
    error = run.error
    assert "PipesDockerImageError" in error_classes(run)
    assert f"Pulling image {registry.reference!r}" in error
    assert engine_says in error
    if blob == "layer":
        assert digest in error
    assert leaks == []  # the engine connection of the failed pull was released
    assert registry.blob_requests(digest)
    assert not present(docker_client, registry.reference)
    # no_containers_left checks that no container was created.


def test_blob_failure_arrives_inside_the_engines_pull_stream(
    registry: RegistryServer, docker_client: docker.DockerClient
) -> None:
    """The premise of the test above: the engine answers 200 and reports the error inside the
    progress stream, which docker-py's ``images.pull`` turns into a bare ImageNotFound."""
    registry.blob_failures[registry.image.nonce_layer_digest] = "corrupt"
    repository, tag = registry.reference.rsplit(":", 1)

    events = list(docker_client.api.pull(repository, tag=tag, stream=True, decode=True))

    errors = [event for event in events if "error" in event]
    assert errors, events
    assert "filesystem layer verification failed" in errors[-1]["error"]
    with pytest.raises(docker.errors.ImageNotFound):
        docker_client.images.pull(registry.reference)


def test_failed_pull_closes_its_engine_connection(
    registry: RegistryServer, docker_client: docker.DockerClient
) -> None:
    """An error event ends the pull; the engine connection must still be released, not left
    open for the garbage collector (a ResourceWarning, an error under this suite's filters)."""
    registry.blob_failures[registry.image.nonce_layer_digest] = "corrupt"
    engine = DockerEngine(docker_client)

    with socket_leaks() as leaks:
        try:
            engine.pull(registry.reference, None)
        except PipesDockerImageError as exc:
            message = str(exc)
        else:
            pytest.fail("the pull did not fail")

    assert "filesystem layer verification failed" in message
    assert leaks == []


def test_missing_manifest_fails_clearly_naming_the_image(
    make_client: MakeClient,
    run_asset: RunAsset,
    registry: RegistryServer,
    docker_client: docker.DockerClient,
) -> None:
    registry.manifest_missing = True

    run = run_asset(make_client(), REPORT_TOKEN, image=registry.reference)

    assert not run.success
    error = run.error
    assert f"pulling image {registry.reference!r}".lower() in error.lower()
    assert "manifest unknown" in error
    assert registry.manifest_requests()
    assert not [r for r in registry.requests if r.is_blob]
    assert not present(docker_client, registry.reference)


def test_image_pinned_by_digest_is_pulled_once_then_reused(
    make_client: MakeClient,
    run_asset: RunAsset,
    registry: RegistryServer,
    docker_client: docker.DockerClient,
) -> None:
    client = make_client(pull_policy="if_not_present")

    first = run_asset(client, REPORT_TOKEN, image=registry.digest_reference)
    after_first = len(registry.requests)
    second = run_asset(client, REPORT_TOKEN, image=registry.digest_reference)

    assert first.success, first.error
    assert second.success, second.error
    assert first.metadata["token"] == registry.image.token
    assert docker_client.images.get(registry.digest_reference).id == registry.image.config_digest
    assert after_first > 0
    assert len(registry.requests) == after_first  # the second run found it present
