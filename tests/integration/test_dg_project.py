"""The component as a new user meets it: a clean venv, ``create-dagster project``, ``dg``.

Runs the README's "Assets in YAML" commands in order, in a venv that holds only what
``pip install pipes-docker create-dagster dagster-dg-cli`` brings (``dg_env.py``), with this
checkout's package in place of the published one; materializes the README's YAML asset on the
real engine and reads its metadata from the instance; and loads ``examples/dg_project``.
"""

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from .dg_env import ROOT, DgEnv, dg_env

SECTION = "## Assets in YAML: the Dagster component"
# The README's commands, each run below ("pip install pipes-docker ..." by dg_env, with this
# checkout's package; "cd my_project" as the working directory of what follows).
README_COMMANDS = [
    "pip install pipes-docker create-dagster dagster-dg-cli",
    "create-dagster project my_project",
    "cd my_project",
    "pip install -e .",
    "dg list components",
    "dg scaffold defs pipes_docker.PipesDockerComponent word_counts",
    "dg check defs",
    "dg list defs",
    "dg launch --assets word_counts",
]
COMPONENT = "pipes_docker.PipesDockerComponent"

READ_METADATA = """
import json, sys
from dagster import AssetKey, DagsterInstance
with DagsterInstance.get() as instance:
    event = instance.get_latest_materialization_event(AssetKey.from_user_string(sys.argv[1]))
    meta = event.asset_materialization.metadata
    print(json.dumps({k: getattr(v, "value", str(v)) for k, v in meta.items()}, default=str))
"""


def readme_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start : end if end > 0 else None]


def readme_block(language: str) -> str:
    match = re.search(rf"```{language}\n(.*?)```", readme_section(), re.S)
    assert match, f"no {language} block in the README's section {SECTION!r}"
    return match.group(1)


def readme_commands() -> list[str]:
    commands = []
    for line in readme_block("bash").splitlines():
        line = line.split("#", 1)[0].strip()
        commands.extend(part.strip() for part in line.split("&&") if part.strip())
    return commands


@pytest.fixture(scope="module")
def dg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DgEnv]:
    env = dg_env(tmp_path_factory.mktemp("dagster-home"))
    yield env
    # The projects are installed editable from temp dirs: leave the cached venv as it was.
    env.run("python", "-m", "pip", "uninstall", "-y", "my_project", "dg_example", cwd=ROOT)


@pytest.fixture(scope="module")
def project(dg: DgEnv, tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("new-user")
    dg.run("create-dagster", "project", "my_project", cwd=where)
    path = where / "my_project"
    dg.run("pip", "install", "--quiet", "-e", ".", cwd=path)
    return path


def defs_yaml(project: Path) -> Path:
    return project / "src" / "my_project" / "defs" / "word_counts" / "defs.yaml"


def dg_output(done: object) -> str:
    return f"{done.stdout}\n{done.stderr}"  # type: ignore[attr-defined]


def test_the_readme_shows_the_commands_this_test_runs() -> None:
    assert readme_commands() == README_COMMANDS


def test_dg_lists_the_component(dg: DgEnv, project: Path) -> None:
    listed = dg.run("dg", "list", "components", cwd=project)
    assert COMPONENT in listed.stdout


def test_the_scaffolded_file_asks_only_for_the_image(dg: DgEnv, project: Path) -> None:
    dg.run("dg", "scaffold", "defs", COMPONENT, "word_counts", cwd=project)
    text = defs_yaml(project).read_text()
    assert f"type: {COMPONENT}" in text
    assert "# env:" in text and "# container_kwargs:" in text and "# backend: swarm" in text

    before = dg.run("dg", "check", "defs", cwd=project, check=False)
    assert before.returncode != 0
    assert "attributes.image" in dg_output(before)
    assert f"{defs_yaml(project)}:" in dg_output(before)

    # Set only the image: the file is good.
    defs_yaml(project).write_text(
        re.sub(r"(?m)^  image:.*$", "  image: pipes-docker-example:latest", text)
    )
    dg.run("dg", "check", "defs", cwd=project)


@pytest.mark.parametrize(
    ("change", "named", "says"),
    [
        (lambda y: y + "  imagee: typo:1\n", "imagee", "was unexpected"),
        (lambda y: y + "  timeout_seconds: soon\n", "timeout_seconds", "valid number"),
        (lambda y: re.sub(r"(?m)^  image:.*\n", "", y), "image", "required property"),
        (lambda y: y + "  service_kwargs: {constraints: [a]}\n", "service_kwargs", "backend"),
    ],
    ids=["unknown-field", "wrong-type", "missing-image", "other-backend"],
)
def test_check_defs_rejects_a_bad_file_naming_field_and_file(
    dg: DgEnv, project: Path, change: object, named: str, says: str
) -> None:
    good = readme_block("yaml")
    path = defs_yaml(project)
    try:
        path.write_text(change(good))  # type: ignore[operator]
        done = dg.run("dg", "check", "defs", cwd=project, check=False)
    finally:
        path.write_text(good)
    output = dg_output(done)
    assert done.returncode != 0, output
    assert f"{path}:" in output, output
    assert named in output and says in output, output


def test_the_readme_yaml_is_listed_and_materializes_on_the_engine(dg: DgEnv, project: Path) -> None:
    defs_yaml(project).write_text(readme_block("yaml"))
    dg.run("dg", "check", "defs", cwd=project)
    listed = dg.run("dg", "list", "defs", cwd=project)
    assert re.search(r"word_counts\s*│\s*containers\s*│.*docker", listed.stdout), listed.stdout

    launched = dg.run("dg", "launch", "--assets", "word_counts", cwd=project, timeout=300)
    assert "RUN_SUCCESS" in dg_output(launched)
    metadata = latest_metadata(dg, project, "word_counts")
    assert metadata["word_count"] == 16  # what images/example/job.py reports
    assert metadata["pipes_docker/image"] == "pipes-docker-example:latest"
    assert metadata["pipes_docker/exit_code"] == 0


def test_the_example_dg_project_loads_and_its_shell_job_reports(dg: DgEnv, tmp_path: Path) -> None:
    example = tmp_path / "dg_project"
    shutil.copytree(ROOT / "examples" / "dg_project", example)
    dg.run("pip", "install", "--quiet", "--no-deps", "-e", ".", cwd=example)
    dg.run("dg", "check", "defs", cwd=example)
    listed = dg.run("dg", "list", "defs", cwd=example).stdout
    for key in ("yaml_word_counts", "yaml_legacy_export", "yaml_shell_report"):
        assert key in listed
    assert "has_lines" in listed

    launched = dg.run("dg", "launch", "--assets", "yaml_shell_report", cwd=example, timeout=300)
    output = dg_output(launched)
    assert "counted 3 lines in yaml_shell_report" in output
    assert "Asset check 'has_lines' on 'yaml_shell_report' passed" in output
    metadata = latest_metadata(dg, example, "yaml_shell_report")
    assert (metadata["lines"], metadata["shell"]) == (3, "busybox")


def latest_metadata(dg: DgEnv, cwd: Path, key: str) -> dict[str, object]:
    done = dg.run("python", "-c", READ_METADATA, key, cwd=cwd)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]
