"""Files brought back: paths in the container copied out after the job, before removal."""

import hashlib
import io
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pipes_docker import (
    PipesDockerClient,
    PipesDockerContainerError,
    PipesDockerCopyOut,
    PipesDockerFilesError,
    PipesDockerSwarmClient,
    retrieve,
)
from pipes_docker.container.engine import ContainerSpec

from .fakes import FakeContainer, FakeEngine
from .test_client import run_asset

REPORT = b"id,rows\n1,42\n"


def writes_files(exit_code: int = 0) -> Any:
    def behaviour(spec: ContainerSpec, box: FakeContainer) -> int:
        box.files["/out/report.csv"] = REPORT
        box.files["/out/plots/a.txt"] = b"a" * 10
        box.files["/out/plots/deep/b.txt"] = b"b" * 20
        return exit_code

    return behaviour


def files_metadata(result: Any) -> dict[str, Any]:
    (event,) = result.get_asset_materialization_events()
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_files_and_directories_arrive_with_size_and_sha256_before_removal(
    tmp_path: Path,
) -> None:
    engine = FakeEngine(behaviour=writes_files())
    result = run_asset(
        PipesDockerClient(engine=engine),
        copy_out=PipesDockerCopyOut(["/out/report.csv", "/out/plots"], str(tmp_path)),
    )
    assert (tmp_path / "report.csv").read_bytes() == REPORT
    assert (tmp_path / "plots" / "deep" / "b.txt").read_bytes() == b"b" * 20
    files = files_metadata(result)["pipes_docker/files"]
    assert files["/out/report.csv"] == {
        "path": os.path.join(tmp_path, "report.csv"),
        "size": len(REPORT),
        "sha256": hashlib.sha256(REPORT).hexdigest(),
    }
    assert files["/out/plots/deep/b.txt"]["size"] == 20
    ops = engine.ops()
    assert ops.index("get_archive") < ops.index("remove")


def test_a_missing_path_fails_the_run_by_default_and_the_container_is_removed(
    tmp_path: Path,
) -> None:
    engine = FakeEngine(behaviour=writes_files())
    with pytest.raises(PipesDockerFilesError, match="/out/nope does not exist"):
        run_asset(
            PipesDockerClient(engine=engine),
            copy_out=PipesDockerCopyOut(["/out/nope"], str(tmp_path)),
        )
    assert engine.live_containers() == []


def test_a_path_over_the_limit_warns_when_asked_and_writes_nothing_of_it(
    tmp_path: Path,
) -> None:
    engine = FakeEngine(behaviour=writes_files())
    result = run_asset(
        PipesDockerClient(engine=engine),
        copy_out=PipesDockerCopyOut(
            ["/out/plots", "/out/report.csv", "/out/gone"],
            str(tmp_path),
            max_bytes=25,
            on_problem="warn",
        ),
    )
    metadata = files_metadata(result)
    assert metadata["pipes_docker/files_missing"] == {
        "/out/plots": "is larger than max_bytes=25 (it holds more)",
        "/out/gone": "does not exist",
    }
    assert not (tmp_path / "plots").exists()
    assert list(metadata["pipes_docker/files"]) == ["/out/report.csv"]


def test_a_failed_job_still_brings_its_files_back_and_its_exit_is_the_error(
    tmp_path: Path,
) -> None:
    engine = FakeEngine(behaviour=writes_files(exit_code=3))
    with pytest.raises(PipesDockerContainerError):
        run_asset(
            PipesDockerClient(engine=engine),
            copy_out=PipesDockerCopyOut(["/out/report.csv", "/out/nope"], str(tmp_path)),
        )
    assert (tmp_path / "report.csv").read_bytes() == REPORT


# Python 3.11 before 3.11.4 (Debian bookworm's 3.11.2) has no tarfile "data" filter: the
# client then checks each member itself. Both ways must bring files back and refuse escapes.
FILTERS = [
    pytest.param(True, id="tarfile-data-filter"),
    pytest.param(False, id="own-checks"),
]


class HostileArchiveEngine(FakeEngine):
    """An engine whose archive holds a link that points out of the destination."""

    def get_archive(self, container_id: str, path: str) -> io.BytesIO | None:
        super().get_archive(container_id, path)
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            link = tarfile.TarInfo("report.csv")
            link.type, link.linkname = tarfile.SYMTYPE, "../../etc/passwd"
            archive.addfile(link)
        return io.BytesIO(buffer.getvalue())


@pytest.mark.parametrize("data_filter", FILTERS)
def test_files_arrive_and_links_out_are_refused_with_or_without_tarfiles_filter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data_filter: bool
) -> None:
    if data_filter and not hasattr(tarfile, "data_filter"):
        pytest.fail("this interpreter has no tarfile data filter: run the tests on 3.11.4+")
    monkeypatch.setattr(retrieve, "_HAS_DATA_FILTER", data_filter)
    result = run_asset(
        PipesDockerClient(engine=FakeEngine(behaviour=writes_files())),
        copy_out=PipesDockerCopyOut(["/out/report.csv", "/out/plots"], str(tmp_path / "ok")),
    )
    assert (tmp_path / "ok" / "plots" / "deep" / "b.txt").read_bytes() == b"b" * 20
    assert files_metadata(result)["pipes_docker/files"]["/out/report.csv"]["size"] == len(REPORT)

    hostile = HostileArchiveEngine(behaviour=writes_files())
    with pytest.raises(PipesDockerFilesError, match="outside the destination"):
        run_asset(
            PipesDockerClient(engine=hostile),
            copy_out=PipesDockerCopyOut(["/out/report.csv"], str(tmp_path / "bad")),
        )
    assert not os.path.lexists(tmp_path / "bad" / "report.csv")
    assert hostile.live_containers() == []


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"paths": ["out/x"], "destination": "/tmp"}, "absolute paths"),
        ({"paths": [], "destination": "/tmp"}, "absolute paths"),
        ({"paths": ["/x"], "destination": "/tmp", "max_bytes": -1}, "max_bytes"),
        ({"paths": ["/x"], "destination": "/tmp", "on_problem": "ignore"}, "on_problem"),
    ],
)
def test_a_bad_request_is_refused_when_it_is_made(kwargs: dict[str, Any], says: str) -> None:
    with pytest.raises(PipesDockerFilesError, match=says):
        PipesDockerCopyOut(**kwargs)


def test_the_swarm_client_refuses_files_before_anything_starts(tmp_path: Path) -> None:
    from .swarm_fakes import FakeSwarmEngine

    engine = FakeSwarmEngine()
    client = PipesDockerSwarmClient(engine=engine)
    with pytest.raises(PipesDockerFilesError, match="Swarm client cannot copy files out"):
        run_asset(client, copy_out=PipesDockerCopyOut(["/out/x"], str(tmp_path)))  # type: ignore[arg-type]
    assert engine.live_services == []
    assert engine.live_configs == []
