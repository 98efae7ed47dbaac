"""PipesDockerComponent: a defs.yaml's attributes reach the client, and its assets materialize.

The component is resolved from YAML as ``dg`` does it, and its definitions are materialized by
Dagster with the client on the in-memory engine (``fakes.py``).
"""

from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster.components.resolved.errors import ResolutionException

from pipes_docker import (
    PipesDockerClient,
    PipesDockerComponent,
    PipesDockerMountedChannel,
    PipesDockerStreamedChannel,
    PipesDockerSwarmClient,
)
from pipes_docker.container.engine import ContainerSpec
from pipes_docker.scaffold import defs_yaml

from .fakes import FakeContainer, FakeEngine
from .test_client import pipes_context, send

# Dagster 1.13's YAML loading calls pydantic's deprecated parse_obj_as: its warning, not ours.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`parse_obj_as` is deprecated:pydantic.warnings.PydanticDeprecatedSince20"
)


def component(text: str) -> PipesDockerComponent:
    return PipesDockerComponent.resolve_from_yaml(text)


def on_engine(comp: PipesDockerComponent, engine: FakeEngine, root: Path) -> PipesDockerComponent:
    """Give the component a client on the fake engine, built from its own client settings."""
    kwargs = comp.client_kwargs()
    kwargs["channel"] = PipesDockerMountedChannel(temp_dir_root=str(root), poll_interval=0.01)
    comp.client = PipesDockerClient(engine=engine, **kwargs)  # type: ignore[misc]
    return comp


def materialize(comp: PipesDockerComponent, **kwargs: Any) -> dg.ExecuteInProcessResult:
    defs = comp.build_defs(None)  # type: ignore[arg-type]
    assets = list(defs.assets or [])
    return dg.materialize(assets, **kwargs)


def reports_every_asset(spec: ContainerSpec, box: FakeContainer) -> int:
    """A job that reports each asset in its context, and a passing check on $CHECK_ASSET."""
    context = pipes_context(box)
    keys = context["asset_keys"]
    messages: list[tuple[str, dict[str, Any]]] = [("opened", {"extras": {}})]
    for key in keys:
        messages.append(
            (
                "report_asset_materialization",
                {
                    "asset_key": key,
                    "metadata": {
                        "rows": {"raw_value": len(key), "type": "int"},
                        "top_n": {"raw_value": context["extras"].get("top_n"), "type": "__infer__"},
                        "partition": {"raw_value": context["partition_key"], "type": "__infer__"},
                    },
                    "data_version": None,
                },
            )
        )
    messages.append(
        (
            "report_asset_check",
            {
                "asset_key": box.env["CHECK_ASSET"],
                "check_name": "not_empty",
                "passed": True,
                "severity": "ERROR",
                "metadata": {},
            },
        )
    )
    messages.append(("closed", {}))
    send(box, *messages)
    return 0


def test_every_attribute_reaches_the_run_and_the_client(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COMP_TEST_TOKEN", "s3cret")
    comp = component(
        """
        image: registry.example/team/job:1
        command: [python, /app/job.py, --fast]
        env: {API_TOKEN: "{{ env('COMP_TEST_TOKEN') }}", MODE: full}
        extras: {top_n: 3}
        container_kwargs: {mem_limit: 256m, network_mode: none}
        pull_policy: never
        registry: {url: registry.example, username: bot, password: "{{ env('COMP_TEST_TOKEN') }}"}
        timeout_seconds: "90"
        inject_pipes: true
        inject_reporter: true
        channel: mounted
        temp_dir_root: /tmp
        log_dir: /var/log/jobs
        forward_termination: false
        termination_timeout_seconds: 5
        reattach: false
        output_rules: [{pattern: "^ERROR", log_level: error}]
        copy_out: {paths: [/out/words.csv], destination: /data/words, max_bytes: 1000}
        assets: [{key: words}]
        """
    )
    run_kwargs = comp.run_kwargs()
    [rule] = run_kwargs.pop("output_rules")
    assert (rule.pattern, rule.log_level) == ("^ERROR", "error")
    copy_out = run_kwargs.pop("copy_out")
    assert (copy_out.paths, copy_out.destination, copy_out.max_bytes) == (
        ("/out/words.csv",),
        "/data/words",
        1000,
    )
    assert run_kwargs == {
        "image": "registry.example/team/job:1",
        "command": ["python", "/app/job.py", "--fast"],
        "env": {"API_TOKEN": "s3cret", "MODE": "full"},
        "extras": {"top_n": 3},
        "container_kwargs": {"mem_limit": "256m", "network_mode": "none"},
        "timeout_seconds": 90.0,
        "inject_pipes": True,
        "inject_reporter": True,
    }
    client_kwargs = comp.client_kwargs()
    assert isinstance(client_kwargs.pop("channel"), PipesDockerMountedChannel)
    assert client_kwargs == {
        "forward_stdio": True,
        "log_dir": "/var/log/jobs",
        "forward_termination": False,
        "termination_timeout_seconds": 5.0,
        "reattach": False,
        "pull_policy": "never",
        "registry": {"url": "registry.example", "username": "bot", "password": "s3cret"},
    }
    assert isinstance(comp.build_client(), PipesDockerClient)


def test_the_swarm_backend_runs_through_the_swarm_client() -> None:
    comp = component(
        """
        image: registry.example/job:1
        backend: swarm
        service_kwargs: {constraints: ["node.role==worker"]}
        schedule_timeout_seconds: 30
        assets: [{key: words}]
        """
    )
    assert comp.run_kwargs()["service_kwargs"] == {"constraints": ["node.role==worker"]}
    assert "container_kwargs" not in comp.run_kwargs()
    kwargs = comp.client_kwargs()
    assert kwargs["schedule_timeout_seconds"] == 30.0
    assert isinstance(kwargs["channel"], PipesDockerStreamedChannel)
    assert "pull_policy" not in kwargs
    assert isinstance(comp.build_client(), PipesDockerSwarmClient)


def test_one_job_materializes_several_assets_and_a_check(pipes_root: Path) -> None:
    engine = FakeEngine(reports_every_asset)
    comp = on_engine(
        component(
            """
            image: registry.example/tables:2
            extras: {top_n: 5}
            env: {STAGE: prod, CHECK_ASSET: warehouse/customers}
            assets:
              - key: warehouse/orders
                group_name: sales
                kinds: [docker, postgres]
                owners: ["team:data"]
                tags: {tier: gold}
                description: Orders, cleaned.
              - key: warehouse/customers
                deps: [raw/customers]
            checks:
              - name: not_empty
                asset: warehouse/customers
            op: {name: load_tables, tags: {team: data}}
            """
        ),
        engine,
        pipes_root,
    )
    defs = comp.build_defs(None)  # type: ignore[arg-type]
    specs = {spec.key.to_user_string(): spec for spec in defs.resolve_all_asset_specs()}
    orders = specs["warehouse/orders"]
    assert (orders.group_name, orders.owners, orders.description) == (
        "sales",
        ["team:data"],
        "Orders, cleaned.",
    )
    assert {"dagster/kind/docker", "dagster/kind/postgres", "tier"} <= set(orders.tags)
    assert [dep.asset_key.to_user_string() for dep in specs["warehouse/customers"].deps] == [
        "raw/customers"
    ]

    result = materialize(comp)

    assert result.success
    events = result.get_asset_materialization_events()
    by_key = {e.asset_key.to_user_string(): e.materialization.metadata for e in events}
    assert set(by_key) == {"warehouse/orders", "warehouse/customers"}
    assert by_key["warehouse/orders"]["top_n"].value == 5
    assert by_key["warehouse/orders"]["pipes_docker/image"].value == "registry.example/tables:2"
    assert by_key["warehouse/customers"]["pipes_docker/exit_code"].value == 0
    [check] = result.get_asset_check_evaluations()
    assert (check.check_name, check.passed) == ("not_empty", True)
    [spec] = engine.specs
    assert spec.env["STAGE"] == "prod"
    assert "load_tables" in {event.node_name for event in result.all_node_events}


def test_a_legacy_job_still_materializes_its_assets_with_the_run_metadata(
    pipes_root: Path,
) -> None:
    engine = FakeEngine()  # exits 0 and says nothing
    comp = on_engine(
        component(
            """
            image: registry.example/legacy:1
            command: sh -c 'echo done'
            assets: [{key: nightly_export}]
            """
        ),
        engine,
        pipes_root,
    )
    result = materialize(comp)
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["pipes_docker/exit_code"].value == 0
    assert engine.specs[0].command == "sh -c 'echo done'"


def test_a_partitioned_asset_runs_with_its_partition_key(pipes_root: Path) -> None:
    comp = on_engine(
        component(
            """
            image: registry.example/daily:1
            env: {CHECK_ASSET: events}
            assets:
              - key: events
                partitions_def: {type: static, partition_keys: [eu, us]}
            checks: [{name: not_empty, asset: events}]
            """
        ),
        FakeEngine(reports_every_asset),
        pipes_root,
    )
    result = materialize(comp, partition_key="us")
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["partition"].value == "us"
    assert event.partition == "us"


@pytest.mark.parametrize(
    ("attributes", "named"),
    [
        ("timeout_seconds: soon", "timeout_seconds"),
        ("pull_policy: sometimes", "pull_policy"),
        ("inject_pipes: maybe", "inject_pipes"),
        ("service_kwargs: {constraints: [a]}", "service_kwargs"),
        ("backend: swarm\ncontainer_kwargs: {user: nobody}", "container_kwargs"),
        ("backend: swarm\nchannel: mounted", "channel"),
        ("channel: streamed\ntemp_dir_root: /tmp", "temp_dir_root"),
        ("output_rules: [{pattern: '(unclosed', log_level: error}]", "output_rules"),
        ("output_rules: [{pattern: '^x'}]", "output_rules"),
        ("copy_out: {paths: [relative.csv], destination: /tmp/out}", "copy_out"),
    ],
)
def test_a_bad_attribute_is_named_where_it_is_written(attributes: str, named: str) -> None:
    text = f"image: job:1\nassets: [{{key: a}}]\n{attributes}\n"
    with pytest.raises(ResolutionException) as caught:
        component(text)
    message = str(caught.value)
    assert f"attributes.{named}" in message or f"- {named}" in message, message
    assert named in message.splitlines()[0], message


def test_no_assets_and_no_checks_is_refused_with_what_to_add() -> None:
    comp = component("image: job:1")
    with pytest.raises(ValueError, match="add at least one under 'assets'"):
        comp.build_defs(None)  # type: ignore[arg-type]


def test_the_scaffolded_file_needs_only_the_image() -> None:
    text = defs_yaml(
        "pipes_docker.PipesDockerComponent", name="daily-report", image=None, asset_key=None
    )
    document = yaml.safe_load(text)
    assert document["type"] == "pipes_docker.PipesDockerComponent"
    assert document["attributes"]["image"] is None
    assert "# env:" in text and "{{ env('API_TOKEN') }}" in text
    document["attributes"]["image"] = "my-job:1"
    comp = component(yaml.safe_dump(document["attributes"]))
    defs = comp.build_defs(None)  # type: ignore[arg-type]
    assert [spec.key.to_user_string() for spec in defs.resolve_all_asset_specs()] == [
        "daily_report"
    ]
    given = defs_yaml("pipes_docker.PipesDockerComponent", name="x", image="job:1", asset_key="t/x")
    assert yaml.safe_load(given)["attributes"]["image"] == "job:1"
    assert yaml.safe_load(given)["attributes"]["assets"] == [{"key": "t/x", "kinds": ["docker"]}]


def test_a_checks_only_component_runs_the_job_as_an_asset_check(pipes_root: Path) -> None:
    comp = on_engine(
        component(
            """
            image: registry.example/audit:1
            env: {CHECK_ASSET: warehouse/orders}
            checks: [{name: not_empty, asset: warehouse/orders}]
            """
        ),
        FakeEngine(reports_every_asset),
        pipes_root,
    )
    defs = comp.build_defs(None)  # type: ignore[arg-type]
    [checks_def] = list(defs.asset_checks or [])
    job = dg.Definitions(
        assets=[dg.AssetSpec("warehouse/orders")], asset_checks=[checks_def]
    ).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process()
    [evaluation] = result.get_asset_check_evaluations()
    assert (evaluation.check_name, evaluation.passed) == ("not_empty", True)


def test_output_rules_in_yaml_turn_a_legacy_jobs_lines_into_metadata_and_a_check(
    pipes_root: Path,
) -> None:
    def legacy(spec: ContainerSpec, box: FakeContainer) -> int:
        box.stdout("loading\nrows written: 1,234\nbad rows: 0\n")
        return 0

    comp = on_engine(
        component(
            r"""
            image: registry.example/legacy:1
            assets: [{key: nightly_export}]
            checks: [{name: no_bad_rows, asset: nightly_export}]
            output_rules:
              - pattern: '^rows written: (?P<rows>[0-9,]+)$'
                metadata: {rows: int}
              - pattern: '^bad rows: 0$'
                check: no_bad_rows
            """
        ),
        FakeEngine(legacy),
        pipes_root,
    )
    result = materialize(comp)
    [event] = result.get_asset_materialization_events()
    assert event.materialization.metadata["rows"].value == 1234
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "no_bad_rows" and check.passed


def test_the_scaffolded_examples_of_rules_and_copy_out_are_valid() -> None:
    text = defs_yaml("pipes_docker.PipesDockerComponent", name="x", image="job:1", asset_key="x")
    lines = text.splitlines()
    start = lines.index("  # output_rules:")
    end = lines.index("  #   destination: /data/reports")
    uncommented = "\n".join(
        line[4:]
        for line in lines[start : end + 1]
        if line.startswith(("  # output_rules", "  # copy_out", "  #   "))
    )
    attributes = yaml.safe_load(uncommented)
    comp = component(yaml.safe_dump({"image": "job:1", "assets": [{"key": "x"}], **attributes}))
    assert [rule.pattern for rule in comp.run_kwargs()["output_rules"]][-1] == (
        r"^rows written: (?P<rows>\d+)$"
    )
    assert comp.run_kwargs()["copy_out"].paths == ("/out/report.csv",)
