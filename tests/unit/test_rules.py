"""Output rules: an unmodified job's lines become log levels, metadata and check results."""

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from dagster import (
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetSpec,
    DagsterEventType,
    DagsterInstance,
    ExecuteInProcessResult,
    materialize,
    multi_asset,
)

from pipes_docker import (
    PipesDockerClient,
    PipesDockerOutputRule,
    PipesDockerOutputRuleError,
    PipesDockerSwarmClient,
)
from pipes_docker.container.engine import ContainerSpec
from pipes_docker.rule_scan import LineScanner
from pipes_docker.rules import RunRules

from .fakes import FakeContainer, FakeEngine
from .test_client import IMAGE, pipes_job

ROWS = PipesDockerOutputRule(r"^rows written: (?P<rows>[\d,]+)$", metadata={"rows": "int"})


def legacy_job(stdout: Sequence[str] = (), stderr: Sequence[str] = ()) -> Any:
    def behaviour(spec: ContainerSpec, box: FakeContainer) -> int:
        for line in stdout:
            box.stdout(line + "\n")
        for line in stderr:
            box.stderr(line + "\n")
        return 0

    return behaviour


def run_assets(
    client: PipesDockerClient,
    *,
    keys: Sequence[str] = ("job",),
    checks: Sequence[tuple[str, str]] = (),
    instance: DagsterInstance | None = None,
    **run_kwargs: Any,
) -> ExecuteInProcessResult:
    @multi_asset(
        specs=[AssetSpec(key) for key in keys],
        check_specs=[AssetCheckSpec(name, asset=asset) for asset, name in checks],
    )
    def step(context: AssetExecutionContext, docker_pipes: PipesDockerClient) -> Any:
        yield from docker_pipes.run(context=context, image=IMAGE, **run_kwargs).get_results()

    return materialize([step], resources={"docker_pipes": client}, instance=instance)


def metadata_of(result: ExecuteInProcessResult, key: str) -> dict[str, Any]:
    (event,) = [
        m for m in result.get_asset_materialization_events() if m.asset_key == AssetKey(key)
    ]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_named_groups_become_typed_metadata_and_lines_still_reach_stdout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    lines = ["starting", "rows written: 1,234", "ratio: 0.75", "mode: full", "ok: true"]
    engine = FakeEngine(behaviour=legacy_job(stdout=lines))
    rules = [
        ROWS,
        PipesDockerOutputRule(r"^ratio: (?P<ratio>\S+)$", metadata=True),
        PipesDockerOutputRule(r"^mode: (?P<mode>\w+)$", metadata={"mode": "text"}),
        PipesDockerOutputRule(r"^ok: (?P<ok>\w+)$", metadata={"ok": "bool"}),
    ]
    result = run_assets(PipesDockerClient(engine=engine), output_rules=rules)
    metadata = metadata_of(result, "job")
    assert metadata["rows"] == 1234
    assert metadata["ratio"] == 0.75
    assert metadata["mode"] == "full"
    assert metadata["ok"] is True
    assert capsys.readouterr().out.count("rows written: 1,234\n") == 1


def test_client_rules_and_run_rules_add_up_and_the_last_match_wins() -> None:
    engine = FakeEngine(behaviour=legacy_job(stdout=["rows written: 1", "rows written: 2"]))
    client = PipesDockerClient(engine=engine, output_rules=[ROWS])
    result = run_assets(
        client,
        output_rules=[PipesDockerOutputRule(r"^rows written: (?P<last>\d+)$", metadata=True)],
    )
    assert metadata_of(result, "job")["rows"] == 2
    assert metadata_of(result, "job")["last"] == 2


def test_a_run_refuses_what_is_not_a_rule_before_making_anything() -> None:
    engine = FakeEngine(behaviour=legacy_job(stdout=["ERROR x"]))
    with pytest.raises(PipesDockerOutputRuleError, match="not dict"):
        run_assets(PipesDockerClient(engine=engine), output_rules=[{"pattern": "^ERROR"}])
    assert engine.containers == {}  # refused before anything was made


def test_log_level_rules_put_matching_lines_in_the_event_log_at_that_level() -> None:
    engine = FakeEngine(
        behaviour=legacy_job(stdout=["fine", "WARN disk 91%"], stderr=["ERROR lost row 7"])
    )
    rules = [
        PipesDockerOutputRule("^ERROR", log_level="error"),
        PipesDockerOutputRule("^WARN", log_level="warning", stream="stdout"),
    ]
    with DagsterInstance.ephemeral() as instance:
        result = run_assets(PipesDockerClient(engine=engine), output_rules=rules, instance=instance)
        levels = {e.user_message: e.level for e in instance.all_logs(result.run_id)}
    assert levels.get("ERROR lost row 7") == logging.ERROR
    assert levels.get("WARN disk 91%") == logging.WARNING
    assert "fine" not in levels


def test_check_rules_report_passed_or_failed_with_metadata_per_asset() -> None:
    engine = FakeEngine(behaviour=legacy_job(stdout=["orders: bad rows: 0", "users: bad rows: 3"]))
    rules = [
        PipesDockerOutputRule(
            r"^orders: bad rows: (?P<bad>0)$", check="no_bad_rows", asset_key="orders"
        ),
        PipesDockerOutputRule(
            r"^users: bad rows: (?P<bad>[1-9]\d*)$",
            check="no_bad_rows",
            passed=False,
            severity="WARN",
            asset_key=["users"],
        ),
    ]
    result = run_assets(
        PipesDockerClient(engine=engine),
        keys=("orders", "users"),
        checks=(("orders", "no_bad_rows"), ("users", "no_bad_rows")),
        output_rules=rules,
    )
    evaluations = {e.asset_key.to_user_string(): e for e in result.get_asset_check_evaluations()}
    assert evaluations["orders"].passed is True
    assert evaluations["users"].passed is False
    assert evaluations["users"].severity.value == "WARN"
    assert evaluations["users"].metadata["bad"].value == 3


def test_rule_metadata_joins_nothing_the_job_reported_itself_and_says_so() -> None:
    engine = FakeEngine(behaviour=pipes_job(metadata={"own": 1}, stdout=["rows written: 5"]))
    rules = [ROWS, PipesDockerOutputRule("^rows", log_level="info")]
    with DagsterInstance.ephemeral() as instance:
        result = run_assets(PipesDockerClient(engine=engine), output_rules=rules, instance=instance)
        logs = "\n".join(e.user_message for e in instance.all_logs(result.run_id))
    assert metadata_of(result, "job")["own"] == 1
    assert "rows" not in metadata_of(result, "job")
    assert "output rules' metadata for it (rows) is not added" in logs
    assert "rows written: 5" in logs
    assert "unexpected message received after closed" not in logs


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"pattern": "(unclosed"}, "not a valid regular expression"),
        ({"pattern": "x"}, "it does nothing"),
        ({"pattern": "x", "metadata": True}, "needs named groups"),
        ({"pattern": "(?P<a>x)", "metadata": {"b": "int"}}, "does not have: b"),
        ({"pattern": "(?P<a>x)", "metadata": {"a": "number"}}, "kinds must be one of"),
        ({"pattern": "x", "log_level": "loud"}, "log_level must be one of"),
    ],
)
def test_a_bad_rule_is_refused_when_it_is_made(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(PipesDockerOutputRuleError, match=says):
        PipesDockerOutputRule(**kwargs)


def test_a_rule_without_its_asset_fails_before_the_container_is_made() -> None:
    engine = FakeEngine(behaviour=legacy_job(stdout=["rows written: 5"]))
    with pytest.raises(PipesDockerOutputRuleError, match="give the rule an asset_key"):
        run_assets(PipesDockerClient(engine=engine), keys=("a", "b"), output_rules=[ROWS])
    assert "create" not in engine.ops()
    wrong = PipesDockerOutputRule(r"(?P<n>\d+)", metadata=True, asset_key="elsewhere")
    with pytest.raises(PipesDockerOutputRuleError, match="does not materialize"):
        run_assets(PipesDockerClient(engine=engine), output_rules=[wrong])
    assert "create" not in engine.ops()


def test_clients_refuse_what_is_not_a_rule() -> None:
    with pytest.raises(PipesDockerOutputRuleError, match="PipesDockerOutputRule values"):
        PipesDockerClient(engine=FakeEngine(), output_rules=["^ERROR"])  # type: ignore[list-item]
    with pytest.raises(PipesDockerOutputRuleError):
        PipesDockerSwarmClient(engine=object(), output_rules=[1])  # type: ignore[arg-type,list-item]


def scan(rules: Sequence[PipesDockerOutputRule], *chunks: str) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    active = RunRules(rules, asset_keys=[AssetKey("a")], handle=lambda m: sent.append(dict(m)))
    target = active.watcher("stdout")
    assert target is not None
    for chunk in chunks:
        target.write(chunk)
    active.report(lambda: (), logging.getLogger("test"))
    return sent


def test_lines_match_as_lines_whatever_the_chunks_and_shared_group_names() -> None:
    rules = [
        PipesDockerOutputRule(r"^a=(?P<v>\d+)$", metadata={"v": "int"}),
        PipesDockerOutputRule(r"^b=(?P<v>\d+)\s*$", log_level="info"),
        PipesDockerOutputRule(r"(?i)^c=(?P<c>x)(?P=c)$", metadata=True),
    ]
    sent = scan(rules, "a=1\nb=2\n", "x a=3\r\nb=\n4\nC=xx\n", "a=5\r\n")
    logs = [m["params"]["message"] for m in sent if m["method"] == "log"]
    assert logs == ["b=2"]
    (report,) = [m for m in sent if m["method"] == "report_asset_materialization"]
    assert report["params"]["metadata"] == {
        "v": {"raw_value": 5, "type": "int"},
        "c": {"raw_value": "x", "type": "text"},
    }


def test_a_number_that_does_not_parse_stays_text() -> None:
    rule = PipesDockerOutputRule(r"^n=(?P<n>.*)$", metadata={"n": "int"})
    (report,) = scan([rule], "n=1.5\n")
    assert report["params"]["metadata"]["n"] == {"raw_value": 1.5, "type": "float"}
    (report,) = scan([rule], "n=lots\n")
    assert report["params"]["metadata"]["n"] == {"raw_value": "lots", "type": "text"}


def test_rules_events_are_dagster_events() -> None:
    engine = FakeEngine(behaviour=legacy_job(stdout=["rows written: 5"]))
    result = run_assets(PipesDockerClient(engine=engine), output_rules=[ROWS])
    assert any(e.event_type == DagsterEventType.ASSET_MATERIALIZATION for e in result.all_events)


def lines_found(rules: Sequence[PipesDockerOutputRule], text: str) -> list[str]:
    return [match.string for _, match in LineScanner(rules).matches(text)]


def test_a_chunk_without_a_prefix_character_finds_nothing_and_with_it_finds_every_line() -> None:
    rules = [
        PipesDockerOutputRule(r"^ERROR", log_level="error"),
        PipesDockerOutputRule(r"^WARN(ING)?\b", log_level="warning"),
    ]
    flood = "x" * 127 + "\n"
    assert lines_found(rules, flood * 500) == []
    # The characters of both prefixes are there, but not at a line's start: still nothing.
    assert lines_found(rules, "no ERROR, no WARNING here\n" * 50) == []
    text = "WARNING: first\n" + flood * 3 + "ERROR x\nERRORS\n WARN\nWARNED\n" + flood + "WARN\n"
    assert lines_found(rules, text) == ["WARNING: first", "ERROR x", "ERRORS", "WARN"]


def test_anchored_rules_without_a_literal_start_find_lines_next_to_each_other() -> None:
    rules = [
        PipesDockerOutputRule(r"^\s*$", log_level="debug"),
        PipesDockerOutputRule(r"^\d+ rows$", log_level="info"),
        PipesDockerOutputRule(r"^(?P<w>\w)x(?P=w)$", log_level="info"),  # does not combine
        PipesDockerOutputRule(r"^done(?!\s)", log_level="info"),  # reads past the line
    ]
    text = "a\n\n  \n12 rows\nbxb\n3 rows later\ndone\n"
    assert lines_found(rules, text) == ["", "  ", "12 rows", "bxb", "done"]
    assert lines_found(rules, "7 rows\n") == ["7 rows"]
