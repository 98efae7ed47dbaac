"""The default channel: mounted where the engine sees our files, streamed where it does not."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager

from pipes_docker.channels.base import OpenChannel, PipesDockerChannel
from pipes_docker.channels.mounted import DEFAULT_MOUNT_PATH, PipesDockerMountedChannel
from pipes_docker.channels.streamed import PipesDockerStreamedChannel
from pipes_docker.container.engine import ContainerEngine
from pipes_docker.errors import PipesDockerChannelError

__all__ = ["PipesDockerAutoChannel"]


class PipesDockerAutoChannel(PipesDockerChannel):
    """Picks the mounted channel when the engine shares our temp dir, else the streamed one.

    The choice comes from one probe per engine (see :mod:`pipes_docker.channels.probe`), cached
    in the process and, for the processes Dagster starts per step, on disk. A local engine gets
    the mounted channel; a remote one (``tcp://``, ``ssh://``) or the host's engine seen from a
    container gets the streamed one.

    Args:
        temp_dir_root: Where the mounted channel makes per-run temp dirs.
        host_temp_dir_root: The engine host's path that backs ``temp_dir_root`` (the
            orchestrator runs in a container). Setting it asks for the mounted channel: a probe
            that finds the mapping wrong is an error, not a silent fallback.
        mount_path: Where the container sees the mounted dir.
    """

    def __init__(
        self,
        *,
        temp_dir_root: str | None = None,
        host_temp_dir_root: str | None = None,
        mount_path: str = DEFAULT_MOUNT_PATH,
    ) -> None:
        self._mounted = PipesDockerMountedChannel(
            temp_dir_root=temp_dir_root,
            host_temp_dir_root=host_temp_dir_root,
            mount_path=mount_path,
        )
        self._streamed = PipesDockerStreamedChannel()
        self._mapping_required = host_temp_dir_root is not None

    @contextmanager
    def open(
        self, *, engine: ContainerEngine, image: str, warn: Callable[[str], None]
    ) -> Iterator[OpenChannel]:
        probe = self._mounted.probe(engine, image)
        if probe.shared:
            with self._mounted.open_checked(
                engine=engine, warn=warn, reason=probe.reason
            ) as opened:
                yield opened
        elif self._mapping_required:
            raise PipesDockerChannelError(self._mounted.describe_unshared(probe))
        else:
            with self._streamed.open_unchecked(warn=warn, reason=probe.reason) as opened:
                yield opened

    def reopen(
        self, record: Mapping[str, str], *, warn: Callable[[str], None]
    ) -> AbstractContextManager[OpenChannel] | None:
        return self._mounted.reopen(record, warn=warn) or self._streamed.reopen(record, warn=warn)
