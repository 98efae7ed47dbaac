"""One protocol suite, two implementations: Python's dagster_pipes and the shell reporter.

Every scenario of :data:`SCENARIOS` runs as a Python job (the test image, dagster_pipes
vendored) and as a shell job with ``inject_reporter=True`` in two images with no Python: Debian
minbase (dash) and BusyBox alone. Each run is checked for what Dagster received: materializations
with their metadata values *and types*, check results, custom messages, log lines, and how the
job ended. A scenario an implementation cannot do says so in the table (:class:`Unsupported`);
it is reported as an expected failure with its reason, never silently skipped.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import pytest
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetSpec,
    DagsterInstance,
    StaticPartitionsDefinition,
    materialize,
    multi_asset,
)

from pipes_docker import PipesDockerClient, PipesDockerMountedChannel, PipesDockerStreamedChannel

from .conftest import TEST_IMAGE

DASH_IMAGE = "pipes-docker-shell-dash:latest"
BUSYBOX_IMAGE = "pipes-docker-shell-busybox:latest"

# The odd string: quotes, backslashes, newlines, a tab, a CR, control characters, non-ASCII.
ODD = 'q"uote \\back\\slash\nline two\ttab\rcr \x01\x1b\x7f é 日本 🎉\n'
# The same string as a printf format, for the shell jobs.
ODD_PRINTF = 'q"uote \\\\back\\\\slash\\nline two\\ttab\\rcr \\001\\033\\177 é 日本 🎉\\n'
BIG = 1_000_000


@dataclass(frozen=True)
class Unsupported:
    """A scenario this implementation cannot do, and why."""

    reason: str


@dataclass(frozen=True)
class Received:
    """What Dagster received from one run."""

    success: bool
    error: str
    materializations: Mapping[str, Mapping[str, Any]]
    data_versions: Mapping[str, str | None]
    checks: Sequence[tuple[str, str, bool, str, Mapping[str, Any]]]
    custom_messages: Sequence[Any]
    logs: Sequence[tuple[int, str]]
    closed_errors: Sequence[str]
    run_id: str


@dataclass(frozen=True)
class Scenario:
    name: str
    python: str | Unsupported
    shell: str | Unsupported
    expect: Callable[[Received, str], None]
    assets: Sequence[str] = ("job",)
    checks: Sequence[tuple[str, str]] = ()
    partitions: Sequence[str] = ()
    extras: Mapping[str, Any] = field(default_factory=dict)


def typed(received: Received, asset: str = "job") -> Mapping[str, Any]:
    return received.materializations[asset]


# --- the scenarios ------------------------------------------------------------------------

EVERY_KIND_PY = """
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    for level in ("debug", "info", "warning", "error", "critical"):
        getattr(pipes.log, level)(f"a {level} message")
    pipes.report_custom_message({"progress": 0.5, "stage": "load"})
    pipes.report_asset_materialization(data_version="v7", metadata={
        "rows": {"raw_value": 42, "type": "int"},
        "ratio": {"raw_value": 0.25, "type": "float"},
        "fresh": {"raw_value": True, "type": "bool"},
        "note": {"raw_value": "all good", "type": "text"},
        "schema": {"raw_value": {"cols": ["a", "b"], "n": 2}, "type": "json"},
        "home": {"raw_value": "https://example.com/x", "type": "url"},
        "out": {"raw_value": "/data/out.csv", "type": "path"},
    })
    pipes.report_asset_check("not_empty", passed=True, severity="WARN",
                             metadata={"rows": {"raw_value": 42, "type": "int"}})
    pipes.report_custom_message("done")
"""

EVERY_KIND_SH = """
for level in debug info warning error critical; do
    dagster-pipes log "$level" "a $level message"
done
dagster-pipes message '{"progress": 0.5, "stage": "load"}'
dagster-pipes materialize --data-version v7 \\
    --meta rows=int:42 --meta ratio=float:0.25 --meta fresh=bool:true \\
    --meta 'note=text:all good' --meta 'schema=json:{"cols": ["a", "b"], "n": 2}' \\
    --meta home=url:https://example.com/x --meta out=path:/data/out.csv
dagster-pipes check not_empty --passed --severity WARN --meta rows=int:42
dagster-pipes message '"done"'
"""


def expect_every_kind(received: Received, impl: str) -> None:
    assert received.success, received.error
    assert typed(received) == {
        "rows": ("IntMetadataValue", 42),
        "ratio": ("FloatMetadataValue", 0.25),
        "fresh": ("BoolMetadataValue", True),
        "note": ("TextMetadataValue", "all good"),
        "schema": ("JsonMetadataValue", {"cols": ["a", "b"], "n": 2}),
        "home": ("UrlMetadataValue", "https://example.com/x"),
        "out": ("PathMetadataValue", "/data/out.csv"),
    }
    assert received.data_versions["job"] == "v7"
    assert received.checks == [
        ("job", "not_empty", True, "WARN", {"rows": ("IntMetadataValue", 42)})
    ]
    assert received.custom_messages == [{"progress": 0.5, "stage": "load"}, "done"]
    for level in ("debug", "info", "warning", "error", "critical"):
        assert (getattr(logging, level.upper()), f"a {level} message") in received.logs
    assert received.closed_errors == []


MULTI_PY = """
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(asset_key="orders", data_version="o1",
        metadata={"rows": {"raw_value": 120, "type": "int"}})
    pipes.report_asset_materialization(asset_key="customers",
        metadata={"rows": {"raw_value": 30, "type": "int"}})
    pipes.report_asset_check(asset_key="customers", check_name="unique_ids", passed=False,
        metadata={"dupes": {"raw_value": 2, "type": "int"}})
"""

MULTI_SH = """
dagster-pipes materialize --asset orders --data-version o1 --meta rows=int:120
dagster-pipes materialize --asset customers --meta rows=int:30
dagster-pipes check unique_ids --failed --asset customers --meta dupes=int:2
"""


def expect_multi(received: Received, impl: str) -> None:
    assert received.success, received.error
    assert typed(received, "orders") == {"rows": ("IntMetadataValue", 120)}
    assert typed(received, "customers") == {"rows": ("IntMetadataValue", 30)}
    assert received.data_versions["orders"] == "o1"
    assert received.checks == [
        ("customers", "unique_ids", False, "ERROR", {"dupes": ("IntMetadataValue", 2)})
    ]


CONTEXT_PY = """
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.report_asset_materialization(metadata={
        "partition": {"raw_value": pipes.partition_key, "type": "text"},
        "run_id": {"raw_value": pipes.run_id, "type": "text"},
        "retry": {"raw_value": pipes.retry_number, "type": "int"},
        "asset": {"raw_value": pipes.asset_key, "type": "text"},
        "source": {"raw_value": pipes.get_extra("source"), "type": "text"},
        "odd": {"raw_value": pipes.get_extra("odd key"), "type": "text"},
        "limits": {"raw_value": pipes.get_extra("limits"), "type": "json"},
    })
"""

CONTEXT_SH = """
dagster-pipes materialize \\
    --meta "partition=text:$(dagster-pipes context partition-key)" \\
    --meta "run_id=text:$(dagster-pipes context run-id)" \\
    --meta "retry=int:$(dagster-pipes context retry-number)" \\
    --meta "asset=text:$(dagster-pipes context asset-key)" \\
    --meta "source=text:$(dagster-pipes context extra source)" \\
    --meta "odd=text:$(dagster-pipes context extra 'odd key'; printf x)" \\
    --meta "limits=json:$(dagster-pipes context extra limits)"
"""


def expect_context(received: Received, impl: str) -> None:
    assert received.success, received.error
    metadata = dict(typed(received))
    odd = metadata.pop("odd")
    assert odd == ("TextMetadataValue", ODD + ("x" if impl != "python" else ""))
    assert metadata == {
        "partition": ("TextMetadataValue", "eu"),
        "run_id": ("TextMetadataValue", received.run_id),
        "retry": ("IntMetadataValue", 0),
        "asset": ("TextMetadataValue", "job"),
        "source": ("TextMetadataValue", "warehouse"),
        "limits": ("JsonMetadataValue", {"rows": 10, "tags": ["a", "b"]}),
    }


BIG_PY = f"""
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.log.info("y" * {BIG})
    pipes.report_custom_message(["z" * {BIG}])
    pipes.report_asset_materialization(metadata={{"blob": {{"raw_value": "x" * {BIG},
        "type": "text"}}}})
"""

BIG_SH = f"""
head -c {BIG} /dev/zero | tr '\\0' x > /tmp/big
head -c {BIG} /dev/zero | tr '\\0' y | dagster-pipes log info
{{ printf '["'; head -c {BIG} /dev/zero | tr '\\0' z; printf '"]'; }} | dagster-pipes message
dagster-pipes materialize --meta-file blob=text:/tmp/big
"""


def expect_big(received: Received, impl: str) -> None:
    assert received.success, received.error
    assert typed(received) == {"blob": ("TextMetadataValue", "x" * BIG)}
    assert received.custom_messages == [["z" * BIG]]
    assert (logging.INFO, "y" * BIG) in received.logs


ODD_PY = f"""
from dagster_pipes import open_dagster_pipes
odd = {ODD!r}
with open_dagster_pipes() as pipes:
    pipes.log.warning(odd)
    pipes.report_custom_message({{"text": odd}})
    pipes.report_asset_materialization(data_version=odd,
        metadata={{odd: {{"raw_value": odd, "type": "text"}}}})
"""

ODD_SH = f"""
odd=$(printf '{ODD_PRINTF}x')
dagster-pipes log warning "$odd"
dagster-pipes materialize --data-version "$odd" --meta "$odd=text:$odd"
"""


def expect_odd(received: Received, impl: str) -> None:
    assert received.success, received.error
    # The shell's string carries an x after the trailing newline ($(...) would cut it).
    odd = ODD if impl == "python" else ODD + "x"
    assert typed(received) == {odd: ("TextMetadataValue", odd)}
    assert received.data_versions["job"] == odd
    assert (logging.WARNING, odd) in received.logs
    if impl == "python":
        assert received.custom_messages == [{"text": odd}]


FAIL_PY = """
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.log.info("before failing")
    raise RuntimeError("the input was empty")
"""

FAIL_SH = """
dagster-pipes log info "before failing"
exit 3
"""


def expect_failure(received: Received, impl: str) -> None:
    assert not received.success
    assert (logging.INFO, "before failing") in received.logs
    if impl == "python":
        assert "exited with code 1" in received.error
        (closed,) = received.closed_errors
        assert "RuntimeError: the input was empty" in closed
    else:
        assert "exited with code 3" in received.error
        (closed,) = received.closed_errors
        assert "the command 'sh' exited with status 3" in closed


EXTERNAL_STREAM_PY = """
from dagster_pipes import open_dagster_pipes
with open_dagster_pipes() as pipes:
    pipes.log_external_stream("stdout", "forwarded by the orchestrator\\n")
"""


def expect_external_stream(received: Received, impl: str) -> None:
    assert received.success, received.error


SCENARIOS = [
    Scenario(
        "every_message_kind",
        EVERY_KIND_PY,
        EVERY_KIND_SH,
        expect_every_kind,
        checks=[("not_empty", "job")],
    ),
    Scenario(
        "multi_asset",
        MULTI_PY,
        MULTI_SH,
        expect_multi,
        assets=("orders", "customers"),
        checks=[("unique_ids", "customers")],
    ),
    Scenario(
        "context_partition_extras",
        CONTEXT_PY,
        CONTEXT_SH,
        expect_context,
        partitions=("eu", "us"),
        extras={"source": "warehouse", "odd key": ODD, "limits": {"rows": 10, "tags": ["a", "b"]}},
    ),
    Scenario("big_payloads", BIG_PY, BIG_SH, expect_big),
    Scenario("odd_strings", ODD_PY, ODD_SH, expect_odd),
    Scenario("failure", FAIL_PY, FAIL_SH, expect_failure),
    Scenario(
        "log_external_stream",
        EXTERNAL_STREAM_PY,
        Unsupported(
            "the shell reporter offers no log_external_stream: a shell job's own"
            " stdout/stderr already reach the orchestrator through the container's"
            " output"
        ),
        expect_external_stream,
    ),
]

IMPLEMENTATIONS = {
    "python": TEST_IMAGE,
    "dash": DASH_IMAGE,
    "busybox": BUSYBOX_IMAGE,
}


# --- running one scenario -----------------------------------------------------------------


def run_scenario(
    client: PipesDockerClient, scenario: Scenario, impl: str, **run_kwargs: Any
) -> Received:
    code = scenario.python if impl == "python" else scenario.shell
    assert isinstance(code, str)
    if impl == "python":
        command = ["python", "-c", code]
    else:
        command = ["dagster-pipes", "run", "--", "sh", "-c", code]
        run_kwargs["inject_reporter"] = True
    custom: list[Any] = []

    @multi_asset(
        name="job_node",
        specs=[AssetSpec(key) for key in scenario.assets],
        check_specs=[AssetCheckSpec(name, asset=asset) for name, asset in scenario.checks],
        partitions_def=(
            StaticPartitionsDefinition(list(scenario.partitions)) if scenario.partitions else None
        ),
    )
    def job_node(context: AssetExecutionContext):  # type: ignore[no-untyped-def]
        invocation = client.run(
            context=context,
            image=IMPLEMENTATIONS[impl],
            command=command,
            extras=dict(scenario.extras),
            **run_kwargs,
        )
        custom.extend(invocation.get_custom_messages())
        yield from invocation.get_results()

    with DagsterInstance.ephemeral() as instance:
        result = materialize(
            [job_node],
            instance=instance,
            raise_on_error=False,
            partition_key=scenario.partitions[0] if scenario.partitions else None,
        )
        entries = list(instance.all_logs(result.run_id))
    failures = [e for e in result.all_events if e.is_step_failure]
    error = failures[0].step_failure_data.error if failures else None
    materializations = {}
    versions = {}
    for m in result.asset_materializations_for_node("job_node"):
        key = m.asset_key.to_user_string()
        materializations[key] = {
            name: (type(value).__name__, value.value)
            for name, value in m.metadata.items()
            if not name.startswith("pipes_docker/")  # the client's own, not the job's
        }
        versions[key] = (m.tags or {}).get("dagster/data_version")
    checks = [
        (
            e.asset_key.to_user_string(),
            e.check_name,
            e.passed,
            e.severity.value,
            {
                n: (type(v).__name__, v.value)
                for n, v in e.metadata.items()
                if not n.startswith("pipes_docker/")
            },
        )
        for e in result.get_asset_check_evaluations()
    ]
    closed = [
        entry.dagster_event.engine_event_data.error.to_string()
        for entry in entries
        if entry.dagster_event is not None
        and entry.dagster_event.is_engine_event
        and "closed with exception" in (entry.dagster_event.message or "")
    ]
    return Received(
        success=result.success,
        error=error.to_string() if error else "",
        materializations=materializations,
        data_versions=versions,
        checks=checks,
        custom_messages=custom,
        logs=[(e.level, e.user_message) for e in entries if e.dagster_event is None],
        closed_errors=closed,
        run_id=result.run_id,
    )


@pytest.fixture(scope="module")
def shell_images(docker_client: docker.DockerClient) -> None:
    for image in (DASH_IMAGE, BUSYBOX_IMAGE):
        try:
            docker_client.images.get(image)
        except docker.errors.ImageNotFound:
            pytest.fail(f"Image {image} is missing: run images/build.sh", pytrace=False)


def cases() -> list[Any]:
    found = []
    for scenario in SCENARIOS:
        for impl in IMPLEMENTATIONS:
            code = scenario.python if impl == "python" else scenario.shell
            marks = []
            if isinstance(code, Unsupported):
                marks.append(pytest.mark.xfail(reason=code.reason, run=False, strict=True))
            found.append(pytest.param(scenario, impl, id=f"{scenario.name}-{impl}", marks=marks))
    return found


@pytest.mark.parametrize(("scenario", "impl"), cases())
def test_scenario_on_the_mounted_channel(
    scenario: Scenario,
    impl: str,
    make_client: Callable[..., PipesDockerClient],
    shell_images: None,
) -> None:
    scenario.expect(run_scenario(make_client(), scenario, impl), impl)


STREAMED = ["every_message_kind", "odd_strings", "failure", "big_payloads"]


@pytest.mark.parametrize(
    ("scenario", "impl"),
    [c for c in cases() if c.values[0].name in STREAMED and c.values[1] != "python"],
)
def test_scenario_on_the_streamed_channel(
    scenario: Scenario,
    impl: str,
    make_client: Callable[..., PipesDockerClient],
    shell_images: None,
) -> None:
    client = make_client(channel=PipesDockerStreamedChannel())
    scenario.expect(run_scenario(client, scenario, impl), impl)


@pytest.mark.parametrize("impl", ["dash", "busybox"])
def test_the_shell_reporter_as_a_non_root_user(
    impl: str, make_client: Callable[..., PipesDockerClient], shell_images: None, tmp_path: Path
) -> None:
    client = make_client(channel=PipesDockerMountedChannel(temp_dir_root=str(tmp_path)))
    received = run_scenario(client, SCENARIOS[0], impl, container_kwargs={"user": "65534:65534"})
    expect_every_kind(received, impl)
