"""Does the engine see the orchestrator's files? One cheap probe per engine and directory.

The probe writes a random token into a fresh directory under the temp root, asks the engine to
bind-mount that directory (as the engine's host would name it) into a container it creates but
never starts, and reads the token back through the mount. The directory's name is unique, so an
engine on another filesystem has no such path and refuses the mount at once; an engine that has
one (a wrong path mapping) shows another file or none. Results are cached per engine address
and directory pair for the life of the process, and on disk for other processes (Dagster starts
one per step; see :mod:`pipes_docker.channels.probe_cache`): a run rarely pays for the probe.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import threading

from pipes_docker.channels.probe_cache import CachedAnswer, ProbeCache, ProbeKey, default_cache_dir
from pipes_docker.container.engine import ContainerEngine
from pipes_docker.errors import PipesDockerChannelError
from pipes_docker.ownership import PROBE_LABEL, orchestrator_labels
from pipes_docker.values import frozen

__all__ = ["ProbeResult", "forget_probe", "forget_probes", "probe_shared_dir"]

_TOKEN_FILE = "token"


@frozen
class ProbeResult:
    """Whether the engine sees ``local_root`` at ``engine_root``, and if not, why."""

    shared: bool
    reason: str


_cache: dict[tuple[str, str, str], ProbeResult] = {}
_lock = threading.Lock()


def probe_shared_dir(
    engine: ContainerEngine, image: str, local_root: str, engine_root: str
) -> ProbeResult:
    """Whether a dir made under ``local_root`` is what the engine bind-mounts from ``engine_root``.

    ``engine_root`` is ``local_root`` when both sides share a filesystem, or the host path that
    backs ``local_root`` when the orchestrator runs in a container.
    """
    key = (engine.address, local_root, engine_root)
    with _lock:
        known = _cache.get(key)
    if known is not None:
        return known
    disk = _disk_cache()
    disk_key = ProbeKey(*key)
    remembered = disk.load(disk_key)
    if remembered is not None:
        result = ProbeResult(remembered.shared, remembered.reason)
    else:
        result = _probe(engine, image, local_root, engine_root)
        disk.store(disk_key, CachedAnswer(result.shared, result.reason))
    with _lock:
        return _cache.setdefault(key, result)


def forget_probe(engine_address: str, local_root: str, engine_root: str) -> None:
    """Drop one answer, here and on disk: it was found wrong, so the next run probes again."""
    with _lock:
        _cache.pop((engine_address, local_root, engine_root), None)
    _disk_cache().forget(ProbeKey(engine_address, local_root, engine_root))


def forget_probes() -> None:
    """Drop every answer this process holds (for tests that change what an engine sees)."""
    with _lock:
        _cache.clear()


def _disk_cache() -> ProbeCache:
    # Made per call: the cache dir comes from the environment, which tests change.
    return ProbeCache(default_cache_dir())


def _probe(engine: ContainerEngine, image: str, local_root: str, engine_root: str) -> ProbeResult:
    token = secrets.token_hex(16).encode()
    try:
        os.makedirs(local_root, exist_ok=True)
        probe_dir = tempfile.mkdtemp(prefix="pipes-docker-probe-", dir=local_root)
    except OSError as exc:
        raise PipesDockerChannelError(
            f"Cannot make a dir under the temp root {local_root}: {exc.strerror or exc}."
        ) from exc
    try:
        try:
            with open(os.path.join(probe_dir, _TOKEN_FILE), "wb") as file:
                file.write(token)
        except OSError as exc:
            raise PipesDockerChannelError(
                f"Cannot write a file under the temp root {local_root}: {exc.strerror or exc}."
                " Free space on that filesystem, or point temp_dir_root at another one."
            ) from exc
        engine_dir = os.path.join(engine_root, os.path.relpath(probe_dir, local_root))
        # Labelled as everything a run makes: a probe its orchestrator's death interrupted is
        # swept with the rest.
        labels = {**orchestrator_labels(), PROBE_LABEL: "true"}
        seen = engine.probe_bind_mount(image, engine_dir, _TOKEN_FILE, labels)
    finally:
        shutil.rmtree(probe_dir, ignore_errors=True)
    if seen == token:
        return ProbeResult(
            True, f"the engine at {engine.address} sees {local_root} as {engine_root}"
        )
    if seen is None:
        if engine_dir == probe_dir:
            missing = f"the dir {probe_dir} this process made does not exist there"
        else:
            missing = (
                f"this process made the dir {probe_dir}, which the engine should see as"
                f" {engine_dir}, but no such path exists there"
            )
        return ProbeResult(
            False, f"the engine at {engine.address} does not share our files: {missing}"
        )
    return ProbeResult(
        False,
        f"the engine at {engine.address} shows other files at {engine_dir} than this process"
        f" wrote at {probe_dir}",
    )
