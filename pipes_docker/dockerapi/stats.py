"""A running container's resource use, from the engine's stats stream."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Mapping
from typing import Any

from pipes_docker.dockerapi import private
from pipes_docker.dockerapi.streams import shutdown_response

logger = logging.getLogger(__name__)

__all__ = ["StatsSampler"]


class StatsSampler:
    """Reads the engine's stats stream (one sample a second, pushed by the engine) on a thread.

    One connection and a JSON document a second: nothing a run would notice. Peak memory is the
    cgroup's own high-water mark where the engine reports one (cgroup v1), else the highest
    sample; CPU seconds and block I/O bytes are the engine's running totals at the last sample.

    The stream is asked for only once the job has run for ``delay`` seconds: the engine's first
    sample comes about a second after the request anyway, so a shorter job would report nothing,
    and asking costs it a request and a stats collector while the container is starting. Running
    totals and the cgroup v1 high-water mark still cover the job from its start.
    """

    def __init__(self, api: Any, container_id: str, delay: float = 0.5) -> None:
        self._api = api
        self._container_id = container_id
        self._delay = delay
        self._figures: dict[str, int | float] = {}
        self._response: Any = None
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._sample, name="pipes-docker-stats", daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        if self._stopped.wait(self._delay):
            return  # the job ended first: nothing the engine could have reported
        try:
            response = private.get_streamed(
                self._api,
                "/containers/{0}/stats",
                self._container_id,
                params={"stream": True},
                timeout=self._api.timeout,
            )
            with self._lock:
                self._response = response
                if self._stopped.is_set():
                    return  # stop() came first and saw no response to shut down
            for sample in private.decoded_json_stream(self._api, response):
                self._take(sample)
        except Exception:  # stats are a nicety: a run never fails for want of them
            logger.debug("Stats of %s unavailable", self._container_id[:12], exc_info=True)
        finally:
            self._close_response()

    def _take(self, sample: Mapping[str, Any]) -> None:
        memory = sample.get("memory_stats") or {}
        peak = memory.get("max_usage") or memory.get("usage")
        figures = dict(self._figures)
        if peak:
            figures["peak_memory_bytes"] = max(int(peak), int(figures.get("peak_memory_bytes", 0)))
        cpu_ns = ((sample.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
        if cpu_ns:
            figures["cpu_seconds"] = round(int(cpu_ns) / 1e9, 3)
        io_entries = (sample.get("blkio_stats") or {}).get("io_service_bytes_recursive") or []
        for op, key in (("read", "read_bytes"), ("write", "write_bytes")):
            values = [int(e.get("value", 0)) for e in io_entries if str(e.get("op")).lower() == op]
            if values:
                figures[key] = max(sum(values), int(figures.get(key, 0)))
        self._figures = figures

    def _close_response(self) -> None:
        with self._lock:
            response, self._response = self._response, None
        if response is not None:
            with contextlib.suppress(Exception):
                response.close()

    def stop(self) -> Mapping[str, int | float]:
        # Neither join nor close here: until its first sample (about a second after start) the
        # engine has not answered, and closing a response another thread reads blocks until the
        # next sample. Shutting the socket down wakes that thread, which closes it and ends.
        self._stopped.set()
        with self._lock:
            response = self._response
        if response is not None:
            shutdown_response(response)
        return dict(self._figures)
