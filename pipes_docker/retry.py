"""The one retry policy for calls to the Docker engine.

Only transient failures are retried: the engine could not be reached (connection refused or
reset, a timeout), or it answered 5xx or 429. A client error (4xx, a missing image, bad
arguments) fails at once. When the policy gives up it re-raises the real last error, so a daemon
that stays unreachable ends in a "Cannot reach the Docker engine at ..." error within
``MAX_SECONDS`` plus one request.

The policy is tenacity's, made when a call first fails transiently: most processes never see
such a failure, and a fresh step process would otherwise pay for importing tenacity (~4 ms)
before its first request.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from pipes_docker.errors import PipesDockerEngineError

if TYPE_CHECKING:
    import tenacity

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


def _policy(started: float) -> tenacity.Retrying:
    """The policy for a call that began at ``started`` (``time.monotonic()``)."""
    import tenacity

    def give_up(state: tenacity.RetryCallState) -> bool:
        return state.attempt_number >= MAX_ATTEMPTS or time.monotonic() - started >= MAX_SECONDS

    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient),
        stop=give_up,
        wait=tenacity.wait_exponential_jitter(multiplier=0.25, max=4.0),
        before_sleep=_log_retry,
        reraise=True,
    )


def retry_transient_engine_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Decorate an engine call with pipes-docker's retry policy."""

    @functools.wraps(fn)
    def call(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.monotonic()
        try:
            return fn(*args, **kwargs)
        except PipesDockerEngineError as exc:
            if not exc.transient:
                raise
            first: BaseException | None = exc

        def attempt(*args: P.args, **kwargs: P.kwargs) -> R:
            # The policy's first attempt is the one already made: its failure, replayed.
            nonlocal first
            failed, first = first, None
            if failed is not None:
                raise failed
            return fn(*args, **kwargs)

        functools.update_wrapper(attempt, fn)  # the retry warning names the call
        return _policy(started)(attempt, *args, **kwargs)

    return call
