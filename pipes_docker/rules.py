"""Output rules: how a job that will never speak Pipes still tells Dagster something.

A rule is a regular expression applied to each line the job writes on stdout or stderr. A line
that matches can be logged to Dagster at a level (``^ERROR`` -> error), and its named groups
can become metadata of an asset's materialization or the result of an asset check
(``^rows written: (?P<rows>\\d+)$``). The lines themselves still go where they always go
(the orchestrator's stdout/stderr, the log files), unchanged.

What rules find is handed to dagster as Pipes messages (:meth:`RunRules.report`), through the
session's own message handler: the materializations and checks come back from
``PipesClientCompletedInvocation.get_results()`` exactly as if the job had reported them.

Cost: the sinks hand over text in chunks of whole lines; ``rule_scan.LineScanner``
finds the few lines some rule may match with C-speed searches over the whole chunk, and only
those are matched rule by rule in Python.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

from dagster import AssetCheckResult, AssetKey, MaterializeResult

from pipes_docker.errors import PipesDockerOutputRuleError
from pipes_docker.messages import PIPES_VERSION_KEY
from pipes_docker.rule_scan import LineScanner
from pipes_docker.values import frozen

__all__ = ["MetadataKind", "PipesDockerOutputRule", "RunRules", "check_rules", "run_rules"]

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
MetadataKind = Literal["int", "float", "text", "bool", "infer"]
Severity = Literal["ERROR", "WARN"]

_LEVELS = ("debug", "info", "warning", "error", "critical")
_KINDS = ("int", "float", "text", "bool", "infer")
_TRUE = frozenset({"true", "yes", "y", "on", "ok", "1", "pass", "passed"})
_FALSE = frozenset({"false", "no", "n", "off", "0", "fail", "failed"})
# Marks the messages rules send, so dagster's "message after closed" warning is dropped for them.
_RULE_MARK = "__pipes_docker_output_rule"


@frozen
class PipesDockerOutputRule:
    """How to read one kind of line of a job's output.

    A rule does at least one of three things with a line its ``pattern`` matches (``re.search``
    on the line without its newline, so ``^`` and ``$`` are the line's start and end):

    * ``log_level``: log the line to Dagster's event log at that level;
    * ``metadata``: add the pattern's named groups to the materialization of ``asset_key``
      (``True`` for every named group with its type inferred, or ``{group: kind}`` for the
      groups named, each coerced to ``"int"``, ``"float"``, ``"bool"``, ``"text"`` or
      ``"infer"``); a later match of the same group wins;
    * ``check``: report the asset check of that name on ``asset_key``, ``passed`` as given,
      with the named groups as its metadata; the last matching line wins. To pass or fail on a
      value, write two rules (``^bad rows: 0$`` passed, ``^bad rows: [1-9]`` failed).

    Args:
        pattern: A Python regular expression.
        log_level: ``"debug"``, ``"info"``, ``"warning"``, ``"error"`` or ``"critical"``.
        metadata: ``True``, or the named groups to keep and their kinds.
        check: The name of an asset check this rule reports.
        passed: Whether a matching line means the check passed.
        severity: The check's severity when it fails: ``"ERROR"`` or ``"WARN"``.
        asset_key: The asset the metadata or check is for (``"a/b"`` or ``["a", "b"]``); may be
            left out when the step has one asset.
        stream: Which output the rule reads: ``"stdout"``, ``"stderr"`` or ``"both"``.

    Raises:
        PipesDockerOutputRuleError: The pattern does not compile, names no group the metadata
            asks for, or the rule does nothing.
    """

    pattern: str
    log_level: LogLevel | None = None
    metadata: bool | Mapping[str, MetadataKind] = False
    check: str | None = None
    passed: bool = True
    severity: Severity = "ERROR"
    asset_key: str | Sequence[str] | None = None
    stream: Literal["stdout", "stderr", "both"] = "both"
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            regex = re.compile(self.pattern)
        except (re.error, TypeError) as exc:
            raise PipesDockerOutputRuleError(
                f"Output rule pattern {self.pattern!r} is not a valid regular expression: {exc}."
            ) from exc
        object.__setattr__(self, "regex", regex)
        problem = self._problem()
        if problem:
            raise PipesDockerOutputRuleError(f"Output rule {self.pattern!r}: {problem}.")

    def _problem(self) -> str | None:
        if self.log_level is not None and self.log_level not in _LEVELS:
            return f"log_level must be one of {', '.join(_LEVELS)}, not {self.log_level!r}"
        if self.log_level is None and not self.metadata and self.check is None:
            return "it does nothing: give it a log_level, metadata or a check"
        if self.stream not in ("stdout", "stderr", "both"):
            return f"stream must be 'stdout', 'stderr' or 'both', not {self.stream!r}"
        if self.severity not in ("ERROR", "WARN"):
            return f"severity must be 'ERROR' or 'WARN', not {self.severity!r}"
        groups = set(self.regex.groupindex)
        if self.metadata is True and not groups:
            return "metadata=True needs named groups in the pattern, like (?P<rows>\\d+)"
        if isinstance(self.metadata, Mapping):
            missing = sorted(set(self.metadata) - groups)
            if missing:
                return f"metadata names groups the pattern does not have: {', '.join(missing)}"
            kinds = {kind for kind in self.metadata.values() if kind not in _KINDS}
            if kinds:
                return f"metadata kinds must be one of {', '.join(_KINDS)}, not {sorted(kinds)}"
        return None

    @property
    def groups(self) -> Mapping[str, MetadataKind]:
        """The named groups this rule reports, with their kinds."""
        if isinstance(self.metadata, Mapping):
            return self.metadata
        return {name: "infer" for name in self.regex.groupindex}


def check_rules(rules: Sequence[PipesDockerOutputRule] | None) -> tuple[PipesDockerOutputRule, ...]:
    """The rules, checked to be rules (a pattern's own checks ran when it was made)."""
    checked = tuple(rules or ())
    for rule in checked:
        if not isinstance(rule, PipesDockerOutputRule):
            raise PipesDockerOutputRuleError(
                f"Output rules must be PipesDockerOutputRule values, not {type(rule).__name__}."
            )
    return checked


@dataclass
class _Findings:
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


class RunRules:
    """One run's rules at work: watch the output sinks, then report what they found.

    The sinks call :meth:`watcher`'s targets from the thread that carries the output; log
    lines go to dagster at once, metadata and checks are gathered and sent by :meth:`report`
    once the job has ended (one materialization per asset, one result per check).
    """

    def __init__(
        self,
        rules: Sequence[PipesDockerOutputRule],
        *,
        asset_keys: Sequence[AssetKey],
        handle: Callable[[Mapping[str, Any]], None],
    ) -> None:
        self._asset_for = {id(rule): _resolve_asset(rule, asset_keys) for rule in rules}
        self._handle = handle
        self._findings = _Findings()
        self._lock = threading.Lock()
        self._scanners = {
            stream: LineScanner([r for r in rules if r.stream in (stream, "both")])
            for stream in ("stdout", "stderr")
        }

    def watcher(self, stream: str) -> _RuleTarget | None:
        """A text target for the sink of ``stream``; ``None`` when no rule reads it."""
        scanner = self._scanners[stream]
        if not scanner.rules:
            return None
        return _RuleTarget(scanner, self._found)

    def _found(self, rule: PipesDockerOutputRule, match: re.Match[str]) -> None:
        if rule.log_level is not None:
            self._send("log", {"message": match.string, "level": rule.log_level.upper()})
        if not rule.metadata and rule.check is None:
            return
        values = {
            name: _metadata_value(match.group(name), kind)
            for name, kind in rule.groups.items()
            if match.group(name) is not None
        }
        asset = self._asset_for[id(rule)]
        with self._lock:
            if rule.metadata:
                self._findings.metadata.setdefault(asset, {}).update(values)
            if rule.check is not None:
                self._findings.checks[(asset, rule.check)] = {
                    "asset_key": asset,
                    "check_name": rule.check,
                    "passed": rule.passed,
                    "severity": rule.severity,
                    "metadata": values,
                }

    def report(self, already: Callable[[], Sequence[Any]], log: Any) -> None:
        """Send what the rules gathered, except what the job itself reported already.

        Called once the Pipes session has closed, so that every message of the job has been
        handled. ``already`` gives the results dagster holds: an asset (or check) the job
        reported on its own keeps the job's report, and the rules' findings for it are named
        in a warning rather than sent twice (dagster refuses a second result).
        """
        with _quiet_after_close(log):
            self._report(already(), log.warning)

    def _report(self, reported: Sequence[Any], warn: Callable[[str], None]) -> None:
        materialized = {
            r.asset_key.to_user_string()
            for r in reported
            if isinstance(r, MaterializeResult) and r.asset_key is not None
        }
        checked = {
            (r.asset_key.to_user_string(), r.check_name)
            for r in reported
            if isinstance(r, AssetCheckResult) and r.asset_key is not None
        }
        with self._lock:
            findings, self._findings = self._findings, _Findings()
        for asset, metadata in findings.metadata.items():
            if asset in materialized:
                warn(
                    f"[pipes-docker] the job reported asset {asset} itself; the output rules'"
                    f" metadata for it ({', '.join(sorted(metadata))}) is not added."
                )
                continue
            self._send(
                "report_asset_materialization",
                {"asset_key": asset, "data_version": None, "metadata": metadata},
            )
        for (asset, check), params in findings.checks.items():
            if (asset, check) in checked:
                warn(
                    f"[pipes-docker] the job reported check {check} on {asset} itself; the"
                    " output rules' result for it is not added."
                )
                continue
            self._send("report_asset_check", params)

    def _send(self, method: str, params: Mapping[str, Any]) -> None:
        self._handle(
            {PIPES_VERSION_KEY: "0.1", "method": method, "params": params, _RULE_MARK: True}
        )


class _RuleTarget:
    """A sink target: receives whole lines of text, applies the rules to them."""

    def __init__(
        self,
        scanner: LineScanner[PipesDockerOutputRule],
        found: Callable[[PipesDockerOutputRule, re.Match[str]], None],
    ) -> None:
        self._scanner = scanner
        self._found = found

    def write(self, text: str) -> int:
        for rule, match in self._scanner.matches(text):
            self._found(rule, match)
        return len(text)

    def flush(self) -> None:
        pass


def _resolve_asset(rule: PipesDockerOutputRule, asset_keys: Sequence[AssetKey]) -> str:
    """The user string of the asset a rule's metadata or check is for."""
    if not rule.metadata and rule.check is None:
        return ""
    selected = [key.to_user_string() for key in asset_keys]
    if rule.asset_key is None:
        if len(selected) == 1:
            return selected[0]
        raise PipesDockerOutputRuleError(
            f"Output rule {rule.pattern!r} reports metadata or a check, and this step has"
            f" {len(selected)} assets ({', '.join(selected) or 'none: an op'}): give the rule"
            " an asset_key."
        )
    key = (
        AssetKey.from_user_string(rule.asset_key)
        if isinstance(rule.asset_key, str)
        else AssetKey(list(rule.asset_key))
    ).to_user_string()
    if key not in selected:
        raise PipesDockerOutputRuleError(
            f"Output rule {rule.pattern!r} reports for asset {key}, which this step does not"
            f" materialize (it has {', '.join(selected) or 'no assets'})."
        )
    return key


def _metadata_value(text: str, kind: MetadataKind) -> dict[str, Any]:
    """A Pipes metadata value for ``text`` as ``kind`` says.

    Numbers may carry thousands separators (``1,234``, ``1_234``); an ``int`` that turns out
    fractional is a float; a value that does not parse as its kind stays text, as written.
    """
    clean = text.strip()
    number = clean.replace(",", "").replace("_", "")
    if kind in ("int", "float", "infer"):
        if kind != "float":
            try:
                return {"raw_value": int(number), "type": "int"}
            except ValueError:
                pass
        try:
            return {"raw_value": float(number), "type": "float"}
        except ValueError:
            pass
    word = clean.lower()
    if (kind == "bool" and word in _TRUE | _FALSE) or (
        kind == "infer" and word in ("true", "false")
    ):
        return {"raw_value": word in _TRUE, "type": "bool"}
    return {"raw_value": text, "type": "text"}


class _RuleMessagesAfterClose(logging.Filter):
    """Drops dagster's "message received after closed" warning for the rules' own messages:
    a job that spoke Pipes and closed before it ended is followed by them by design."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not (text.startswith("[pipes] unexpected message") and _RULE_MARK in text)


@contextmanager
def _quiet_after_close(log: Any) -> Iterator[None]:
    notice = _RuleMessagesAfterClose()
    log.addFilter(notice)
    try:
        yield
    finally:
        log.removeFilter(notice)


@contextmanager
def run_rules(
    rules: Sequence[PipesDockerOutputRule],
    *,
    asset_keys: Sequence[AssetKey],
    handle: Callable[[Mapping[str, Any]], None],
    log: logging.Logger | Any,
) -> Iterator[RunRules]:
    """The run's :class:`RunRules`, with the warning filter on."""
    active = RunRules(rules, asset_keys=asset_keys, handle=handle)
    with _quiet_after_close(log):
        yield active
