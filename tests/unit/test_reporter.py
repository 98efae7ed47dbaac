"""The shell reporter (``dagster-pipes``) under the host's dash and BusyBox ash, and its injection.

Every message the script writes is parsed back as JSON here: what Dagster would receive.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dagster_pipes import PipesContextData, encode_param

from pipes_docker.errors import PipesDockerReporterError
from pipes_docker.reporter import (
    CONTEXT_DIR,
    REPORTER_BIN,
    context_files,
    reporter_injection,
    reporter_script,
)

SHELLS = {"dash": ["dash"], "busybox": ["busybox", "sh"]}
# Asset keys are listed one per line: any character but a newline.
ODD_KEY = 'sch\u00e9ma "q" \\back/slash\ttab'
ODD = 'quote " backslash \\ newline\nnew tab\tcr\r ctl\x01\x1b\x1f del\x7f é 日本 🎉 end\n\n'


def shell_argv(name: str) -> list[str]:
    argv = SHELLS[name]
    if shutil.which(argv[0]) is None:
        pytest.fail(f"{argv[0]} is missing on this host: run scripts/setup.sh", pytrace=False)
    return argv


@pytest.fixture(params=sorted(SHELLS))
def shell(request: pytest.FixtureRequest) -> list[str]:
    return shell_argv(request.param)


def context_data(**overrides: Any) -> PipesContextData:
    data: dict[str, Any] = {
        "asset_keys": ["orders"],
        "code_version_by_asset_key": None,
        "provenance_by_asset_key": None,
        "partition_key": None,
        "partition_key_range": None,
        "partition_time_window": None,
        "run_id": "run-123",
        "job_name": "job",
        "retry_number": 2,
        "extras": {},
    }
    data.update(overrides)
    return data  # type: ignore[return-value]


@dataclass
class Reporter:
    """The script installed in a temp dir with a context, writing messages to a file."""

    shell: list[str]
    root: Path

    @property
    def script(self) -> Path:
        return self.root / REPORTER_BIN.lstrip("/") / "dagster-pipes"

    @property
    def messages_file(self) -> Path:
        return self.root / "messages"

    def env(self, destination: str | None = None) -> dict[str, str]:
        return {
            "PATH": os.environ["PATH"],
            "DAGSTER_PIPES_SH_MESSAGES": destination or str(self.messages_file),
            "DAGSTER_PIPES_SH_CONTEXT": str(self.root / CONTEXT_DIR.lstrip("/")),
        }

    def run(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        stdin: str = "",
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.shell, str(self.script), *args],
            env=self.env() if env is None else env,
            input=stdin.encode(),
            capture_output=True,
            timeout=30,
        )
        # Decoded without newline translation: a \r must arrive as a \r.
        return subprocess.CompletedProcess(
            done.args, done.returncode, done.stdout.decode(), done.stderr.decode()
        )

    def messages(self) -> list[dict[str, Any]]:
        text = self.messages_file.read_bytes().decode()
        return [json.loads(line) for line in text.splitlines()]


def install(shell: list[str], root: Path, data: PipesContextData) -> Reporter:
    bootstrap = {"DAGSTER_PIPES_MESSAGES": encode_param({"path": "/dagster-pipes/messages"})}
    injection = reporter_injection(bootstrap, data, image_env={})
    for file in injection.files:
        target = root / file.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(file.data)
        target.chmod(file.mode)
    (root / "messages").write_bytes(b"")
    return Reporter(shell, root)


@pytest.fixture
def reporter(shell: list[str], tmp_path: Path) -> Reporter:
    return install(shell, tmp_path, context_data())


def only_message(reporter: Reporter) -> dict[str, Any]:
    (message,) = reporter.messages()
    assert message["__dagster_pipes_version"] == "0.1"
    return message


# --- reports ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("debug", "DEBUG"),
        ("info", "INFO"),
        ("warning", "WARNING"),
        ("warn", "WARNING"),
        ("error", "ERROR"),
        ("CRITICAL", "CRITICAL"),
    ],
)
def test_log_at_every_level(reporter: Reporter, level: str, expected: str) -> None:
    done = reporter.run("log", level, "rows", "loaded")
    assert done.returncode == 0, done.stderr
    assert only_message(reporter) == {
        "__dagster_pipes_version": "0.1",
        "method": "log",
        "params": {"message": "rows loaded", "level": expected},
    }


def test_odd_strings_arrive_exactly_everywhere(shell: list[str], tmp_path: Path) -> None:
    reporter = install(shell, tmp_path, context_data(asset_keys=[ODD_KEY, "other"]))
    steps = [
        ("log", "error", ODD),
        ("materialize", "--asset", ODD_KEY, "--data-version", ODD, "--meta", f"{ODD}=text:{ODD}"),
        ("check", ODD, "--passed", "--asset", ODD_KEY, "--meta", f"why=md:{ODD}"),
    ]
    for step in steps:
        done = reporter.run(*step)
        assert done.returncode == 0, done.stderr
    log, materialization, check = reporter.messages()
    assert log["params"]["message"] == ODD
    assert materialization["params"] == {
        "asset_key": ODD_KEY,
        "data_version": ODD,
        "metadata": {ODD: {"raw_value": ODD, "type": "text"}},
    }
    assert check["params"]["check_name"] == ODD
    assert check["params"]["metadata"]["why"]["raw_value"] == ODD


def test_log_reads_stdin_when_no_message_is_given(reporter: Reporter) -> None:
    done = reporter.run("log", "info", stdin="from a pipe\tand more\n")
    assert done.returncode == 0, done.stderr
    assert only_message(reporter)["params"]["message"] == "from a pipe\tand more"


def test_metadata_types_come_out_right(reporter: Reporter) -> None:
    done = reporter.run(
        "materialize",
        "--meta",
        "rows=int:-42",
        "--meta",
        "ratio=float:1.5e3",
        "--meta",
        "ok=bool:false",
        "--meta",
        'doc=json:{"a": [1, 2.5, true, null, "x\\"y"],\n "b": {}}',
        "--meta",
        "home=url:https://example.com/a?b=c",
        "--meta",
        "out=path:/data/out.csv",
        "--meta",
        "note=text:a=b:c",
        "--meta",
        "at=timestamp:1700000000.5",
        "--meta",
        "nothing=null:",
    )
    assert done.returncode == 0, done.stderr
    metadata = only_message(reporter)["params"]["metadata"]
    assert metadata == {
        "rows": {"raw_value": -42, "type": "int"},
        "ratio": {"raw_value": 1500.0, "type": "float"},
        "ok": {"raw_value": False, "type": "bool"},
        "doc": {"raw_value": {"a": [1, 2.5, True, None, 'x"y'], "b": {}}, "type": "json"},
        "home": {"raw_value": "https://example.com/a?b=c", "type": "url"},
        "out": {"raw_value": "/data/out.csv", "type": "path"},
        "note": {"raw_value": "a=b:c", "type": "text"},
        "at": {"raw_value": 1700000000.5, "type": "timestamp"},
        "nothing": {"raw_value": None, "type": "null"},
    }


def test_materialization_defaults_to_the_only_asset_and_no_data_version(reporter: Reporter) -> None:
    assert reporter.run("materialize").returncode == 0
    assert only_message(reporter)["params"] == {
        "asset_key": "orders",
        "data_version": None,
        "metadata": {},
    }


def test_asset_check_failed_with_severity(reporter: Reporter) -> None:
    done = reporter.run(
        "check", "not_empty", "--failed", "--severity", "WARN", "--meta", "rows=int:0"
    )
    assert done.returncode == 0, done.stderr
    assert only_message(reporter)["params"] == {
        "asset_key": "orders",
        "check_name": "not_empty",
        "passed": False,
        "severity": "WARN",
        "metadata": {"rows": {"raw_value": 0, "type": "int"}},
    }


def test_custom_message_from_argument_and_stdin(reporter: Reporter) -> None:
    assert reporter.run("message", '{"progress": 0.5, "s": "\\u00e9\\n"}').returncode == 0
    assert reporter.run("message", stdin='[1,\n 2,\r\n "three"]\n').returncode == 0
    assert [m["params"]["payload"] for m in reporter.messages()] == [
        {"progress": 0.5, "s": "é\n"},
        [1, 2, "three"],
    ]


def test_a_large_value_from_a_file(reporter: Reporter, tmp_path: Path) -> None:
    big = 'line with "quotes" and \\ and é\n' * 40_000  # ~1.3 MB
    source = tmp_path / "big.txt"
    source.write_text(big)
    done = reporter.run("materialize", "--meta-file", f"report=text:{source}")
    assert done.returncode == 0, done.stderr
    assert only_message(reporter)["params"]["metadata"]["report"]["raw_value"] == big


def test_messages_on_stderr(reporter: Reporter) -> None:
    done = reporter.run("log", "info", "x", env=reporter.env("stderr"))
    assert done.returncode == 0
    assert json.loads(done.stderr)["params"] == {"message": "x", "level": "INFO"}
    assert reporter.messages() == []


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ('{"a": 1}', True),
        ("[]", True),
        ('"s"', True),
        ("-0.5e-3", True),
        ("null", True),
        ('[[[[{"a": [{}]}]]]]', True),
        ("[1,]", False),
        ('{"a" 1}', False),
        ("01", False),
        ("1 2", False),
        ("tru", False),
        ('"unterminated', False),
        ('"bad \\x escape"', False),
        ('{"a": 1}}', False),
        ("", False),
        ("[1] [2]", False),
        ('"raw\ttab"', False),
        ("{'a': 1}", False),
        ("NaN", False),
    ],
)
def test_json_is_checked_before_it_is_sent(reporter: Reporter, text: str, valid: bool) -> None:
    done = reporter.run("message", text)
    assert (done.returncode == 0) is valid, done.stderr
    if valid:
        assert only_message(reporter)["params"]["payload"] == json.loads(text)
    else:
        assert "not a valid JSON value" in done.stderr
        assert reporter.messages() == []


# --- misuse -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["frobnicate"], "unknown command 'frobnicate'"),
        (["log", "loud", "x"], "unknown level 'loud'"),
        (["materialize", "--meta", "rows"], "not KEY=TYPE:VALUE"),
        (["materialize", "--meta", "rows=42"], "not KEY=TYPE:VALUE"),
        (["materialize", "--meta", "rows=integer:42"], "unknown type 'integer'"),
        (["materialize", "--meta", "rows=int:4.2"], "not an int"),
        (["materialize", "--meta", "rows=int:"], "not an int"),
        (["materialize", "--meta", "r=float:1,5"], "not a number"),
        (["materialize", "--meta", "ok=bool:yes"], "not a bool"),
        (["materialize", "--meta", "doc=json:{oops}"], "not valid JSON"),
        (["materialize", "--meta-file", "doc=text:/no/such/file"], "cannot read the file"),
        (["materialize", "--asset", "customers"], "asset 'customers' is not in scope"),
        (["materialize", "--colour"], "unknown option '--colour'"),
        (["check", "c"], "--passed or --failed"),
        (["check", "--passed"], "check's NAME"),
        (["check", "c", "--passed", "--severity", "FATAL"], "unknown severity"),
        (["message", "{"], "not a valid JSON value"),
        (["context", "colour"], "unknown field 'colour'"),
        (["context", "extra", "missing"], "no extra 'missing'"),
    ],
)
def test_misuse_says_why_exits_non_zero_and_sends_nothing(
    reporter: Reporter, args: list[str], says: str
) -> None:
    done = reporter.run(*args)
    assert done.returncode == 2
    assert says in done.stderr
    assert done.stderr.startswith("dagster-pipes: ")
    assert reporter.messages() == []


def test_several_assets_need_an_asset_key(shell: list[str], tmp_path: Path) -> None:
    reporter = install(shell, tmp_path, context_data(asset_keys=["orders", "customers"]))
    done = reporter.run("materialize")
    assert done.returncode == 2
    assert "several assets are in scope" in done.stderr
    assert reporter.run("materialize", "--asset", "customers").returncode == 0
    assert only_message(reporter)["params"]["asset_key"] == "customers"


def test_an_op_has_no_asset_to_materialize(shell: list[str], tmp_path: Path) -> None:
    reporter = install(shell, tmp_path, context_data(asset_keys=None))
    done = reporter.run("materialize")
    assert done.returncode == 2
    assert "no assets are in scope" in done.stderr


# --- outside a Pipes run ------------------------------------------------------------------


def test_outside_a_pipes_run_reports_do_nothing_and_succeed(reporter: Reporter) -> None:
    env = {"PATH": os.environ["PATH"]}
    for args in (
        ["log", "info", "x"],
        ["materialize", "--meta", "a=int:1"],
        ["check", "c", "--passed"],
        ["message", "1"],
        ["context", "run-id"],
    ):
        done = reporter.run(*args, env=env)
        assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert reporter.run("active", env=env).returncode == 1
    assert reporter.run("active").returncode == 0
    # Misuse is still misuse by hand.
    assert reporter.run("materialize", "--meta", "a=int:x", env=env).returncode == 2
    ran = reporter.run("run", "--", "sh", "-c", "echo by hand; exit 3", env=env)
    assert (ran.returncode, ran.stdout) == (3, "by hand\n")


def test_a_pipes_run_without_the_reporters_variables_is_an_error(reporter: Reporter) -> None:
    env = {"PATH": os.environ["PATH"], "DAGSTER_PIPES_CONTEXT": "eJyrrgUAAXUA+Q=="}
    done = reporter.run("log", "info", "x", env=env)
    assert done.returncode == 2
    assert "inject_reporter=True" in done.stderr


# --- the context --------------------------------------------------------------------------


def test_context_fields(shell: list[str], tmp_path: Path) -> None:
    extras = {"source": "warehouse", ODD: ODD, "limits": {"rows": 10}, "n": 3, "": "empty key"}
    reporter = install(
        shell,
        tmp_path,
        context_data(asset_keys=["a/b", "c"], partition_key="2024-01-01", extras=extras),
    )

    def get(*args: str) -> str:
        done = reporter.run("context", *args)
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert get("run-id") == "run-123"
    assert get("job-name") == "job"
    assert get("retry-number") == "2"
    assert get("partition-key") == "2024-01-01"
    assert get("asset-keys") == "a/b\nc\n"
    assert get("extra", "source") == "warehouse"
    assert get("extra", ODD) == ODD
    assert get("extra", "") == "empty key"
    assert json.loads(get("extra", "limits")) == {"rows": 10}
    assert get("extra", "n") == "3"
    assert json.loads(get("extra-json", "source")) == "warehouse"
    assert json.loads(get("extras")) == extras


def test_no_partition_key_prints_nothing(reporter: Reporter) -> None:
    done = reporter.run("context", "partition-key")
    assert (done.returncode, done.stdout) == (0, "")


# --- run: opened and closed ---------------------------------------------------------------


def test_run_reports_opened_and_closed(reporter: Reporter) -> None:
    done = reporter.run(
        "run",
        "--",
        "sh",
        "-c",
        'read line; echo "got $line"; dagster-pipes log info inside',
        stdin="input\n",
        env={**reporter.env(), "PATH": f"{reporter.script.parent}:/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "got input\n"
    assert [(m["method"], m["params"]) for m in reporter.messages()] == [
        ("opened", {"extras": {}}),
        ("log", {"message": "inside", "level": "INFO"}),
        ("closed", {}),
    ]


def test_run_reports_a_failure_and_keeps_the_exit_status(reporter: Reporter) -> None:
    done = reporter.run("run", "sh", "-c", "exit 7")
    assert done.returncode == 7
    opened, closed = reporter.messages()
    assert opened["method"] == "opened"
    exception = closed["params"]["exception"]
    assert exception["message"] == "the command 'sh' exited with status 7"
    assert exception["name"] == "CommandFailed"
    assert (exception["stack"], exception["cause"], exception["context"]) == ([], None, None)


def test_run_passes_sigterm_on_and_reports_it(reporter: Reporter, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    job = f"trap 'echo cleaned up; exit 5' TERM; touch {ready}; while :; do sleep 0.1; done"
    process = subprocess.Popen(
        [*reporter.shell, str(reporter.script), "run", "--", "sh", "-c", job],
        env=reporter.env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 10
    while not ready.exists():
        assert time.monotonic() < deadline, "the job did not start"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=10)
    assert process.returncode == 5
    assert out == "cleaned up\n"
    message = reporter.messages()[-1]["params"]["exception"]["message"]
    assert message == "the command 'sh' exited with status 5 after the job got SIGTERM"


# --- the injection ------------------------------------------------------------------------


def bootstrap(params: Mapping[str, Any]) -> dict[str, str]:
    return {"DAGSTER_PIPES_MESSAGES": encode_param(params)}


@pytest.mark.parametrize(
    ("params", "destination"),
    [
        ({"path": "/dagster-pipes/messages"}, "/dagster-pipes/messages"),
        ({"stdio": "stderr"}, "stderr"),
        ({"buffered_stdio": "stdout"}, "stdout"),
    ],
)
def test_injection_points_the_reporter_at_the_messages(
    params: Mapping[str, Any], destination: str
) -> None:
    injection = reporter_injection(bootstrap(params), context_data(), image_env={})
    assert injection.env["DAGSTER_PIPES_SH_MESSAGES"] == destination
    assert injection.env["DAGSTER_PIPES_SH_CONTEXT"] == CONTEXT_DIR
    (script,) = [f for f in injection.files if f.path == f"{REPORTER_BIN}/dagster-pipes"]
    assert script.mode == 0o755
    assert script.data == reporter_script()
    assert script.data.startswith(b"#!/bin/sh\n")


def test_a_reader_the_shell_cannot_write_to_is_refused() -> None:
    with pytest.raises(PipesDockerReporterError, match="writes messages to a file or to"):
        reporter_injection(
            bootstrap({"bucket": "b", "key_prefix": "k"}), context_data(), image_env={}
        )


@pytest.mark.parametrize(
    ("image_env", "layers", "path"),
    [
        ({"PATH": "/usr/bin:/bin"}, [], f"{REPORTER_BIN}:/usr/bin:/bin"),
        ({"PATH": "/usr/bin"}, [{"PATH": "/custom"}, {}], f"{REPORTER_BIN}:/custom"),
        ({}, [], f"{REPORTER_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    ],
)
def test_the_reporter_goes_first_on_the_path_in_force(
    image_env: Mapping[str, str], layers: Sequence[Mapping[str, str]], path: str
) -> None:
    injection = reporter_injection(
        bootstrap({"stdio": "stderr"}), context_data(), image_env=image_env, env_layers=layers
    )
    assert injection.env["PATH"] == path


def test_context_files_leave_out_what_the_context_lacks() -> None:
    names = {f.path for f in context_files(context_data(asset_keys=None))}
    assert f"{CONTEXT_DIR}/partition_key" not in names
    assert f"{CONTEXT_DIR}/asset_keys" not in names
    assert f"{CONTEXT_DIR}/run_id" in names
