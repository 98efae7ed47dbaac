"""The one retry policy for calls to the Docker engine.

Only transient failures are retried: the engine could not be reached (connection refused or
reset, a timeout), or it answered 5xx or 429. A client error (4xx, a missing image, bad
arguments) fails at once. When the policy gives up it re-raises the real last error, so a daemon
that stays unreachable ends in a "Cannot reach the Docker engine at ..." error within
``MAX_SECONDS`` plus one request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import tenacity

from pipes_docker.errors import PipesDockerEngineError

__all__ = ["MAX_ATTEMPTS", "MAX_SECONDS", "is_transient", "retry_transient_engine_errors"]

logger = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
MAX_SECONDS = 20.0

P = ParamSpec("P")
R = TypeVar("R")


def is_transient(exc: BaseException) -> bool:
    return isinstance(exc, PipesDockerEngineError) and exc.transient


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    logger.warning(
        "Docker engine call %s failed (attempt %d of %d), retrying: %s",
        getattr(state.fn, "__name__", "?"),
        state.attempt_number,
        MAX_ATTEMPTS,
        exc,
    )


def retry_transient_engine_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate an engine call with pipes-docker's retry policy."""
    decorated: Callable[P, R] = tenacity.retry(
        retry=tenacity.retry_if_exception(is_transient),
        stop=tenacity.stop_after_attempt(MAX_ATTEMPTS) | tenacity.stop_after_delay(MAX_SECONDS),
        wait=tenacity.wait_exponential_jitter(multiplier=0.25, max=4.0),
        before_sleep=_log_retry,
        reraise=True,
    )(fn)
    return decorated
