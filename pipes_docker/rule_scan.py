"""Finding the few lines of a big output that some output rule may match, cheaply.

Output rules (:mod:`pipes_docker.rules`) read every line a job writes, and a job may write
gigabytes of lines none of them wants. Running each rule's regex on each line in Python would
cost more than forwarding the output; so a chunk of whole lines is first searched for
*candidate* lines with a few C-speed passes, and only those lines are matched rule by rule.

Three kinds of rules, three searches, each finding a superset of the lines its rules match:

* **Anchored rules** (``^ERROR``, ``^rows written: (?P<n>\\d+)$``: a pattern of one branch
  that starts with ``^``) are found together by one regex, ``\\n(?:ERROR|rows written: ...)``,
  whose literal ``\\n`` lets ``re`` jump from line start to line start. When every anchored rule
  starts with literal text (the usual case), a chunk first goes through a cheaper test: a line
  can only start with ``ERROR`` if the chunk holds an ``E``, an ``R`` and an ``O``, and
  ``ch in text`` is a ``memchr``. A flood of lines without those characters costs a few
  ``memchr`` passes per chunk and no regex at all.
* **Other rules** are searched in one alternation of their patterns (or one pass per pattern
  when they do not combine: inline flags, back-references), as they must be: anywhere.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Generic, Protocol, TypeVar

__all__ = ["LineScanner", "literal_prefix"]


class _Rule(Protocol):
    @property
    def pattern(self) -> str: ...

    @property
    def regex(self) -> re.Pattern[str]: ...


R = TypeVar("R", bound=_Rule)


class LineScanner(Generic[R]):
    """Finds the lines of a text chunk that some rule matches.

    Args:
        rules: The rules, each with its ``pattern`` and compiled ``regex``; a line is matched
            against them in this order.
    """

    def __init__(self, rules: Sequence[R]) -> None:
        self.rules = tuple(rules)
        forms = {rule.pattern: _line_start_form(rule.pattern) for rule in rules}
        anchored = [form for form in forms.values() if form is not None]
        anywhere = [pattern for pattern, form in forms.items() if form is None]
        self._line_start: re.Pattern[str] | None = None
        self._first_line: re.Pattern[str] | None = None
        try:
            if anchored:
                # A look-ahead: a hit consumes only its "\n", so the next line is seen too.
                self._line_start = re.compile("\n(?=" + "|".join(anchored) + ")", re.MULTILINE)
                self._first_line = re.compile("|".join(anchored), re.MULTILINE)
        except re.error:  # they do not combine after all: search them all anywhere
            forms = dict.fromkeys(forms)
            anywhere = list(forms)
        prefixes = [literal_prefix(pattern) for pattern, form in forms.items() if form]
        self._needles: tuple[tuple[str, ...], ...] | None = None
        if all(prefixes):
            self._needles = tuple(tuple(dict.fromkeys(prefix)) for prefix in prefixes)
        self._anywhere = [re.compile(p, re.MULTILINE) for p in anywhere]
        if len(anywhere) > 1:
            # Inline flags or back-references do not combine: then one pass per rule.
            with contextlib.suppress(re.error):
                self._anywhere = [
                    re.compile("|".join(f"(?:{_ungrouped(p)})" for p in anywhere), re.MULTILINE)
                ]

    def matches(self, text: str) -> Iterator[tuple[R, re.Match[str]]]:
        """Every (rule, match) in ``text``'s lines, line by line, rules in their order."""
        if "\r" in text:  # a CRLF line ends where its LF line would
            text = text.replace("\r\n", "\n")
        starts = self._candidate_lines(text)
        if not starts:
            return
        for start in sorted(starts):
            if start == len(text):  # after the chunk's last newline: no line
                break
            end = text.find("\n", start)
            line = text[start : len(text) if end < 0 else end]
            for rule in self.rules:
                match = rule.regex.search(line)
                if match is not None:
                    yield rule, match

    def _candidate_lines(self, text: str) -> set[int] | None:
        """The start of every line some rule may match; ``None`` for none."""
        starts: set[int] | None = None
        if self._line_start is not None and self._may_start_a_line(text):
            starts = {hit.start() + 1 for hit in self._line_start.finditer(text)}
            if self._first_line is not None and self._first_line.match(text):
                starts.add(0)
        for pattern in self._anywhere:
            position = 0
            while (hit := pattern.search(text, position)) is not None:
                if starts is None:
                    starts = set()
                starts.add(text.rfind("\n", 0, hit.start()) + 1)
                end = text.find("\n", hit.start())
                if end < 0:
                    break
                position = end + 1
        return starts

    def _may_start_a_line(self, text: str) -> bool:
        """Whether the anchored rules need a search: some literal prefix has all its
        characters in ``text`` (or some anchored rule has no literal prefix)."""
        if self._needles is None:
            return True
        return any(all(ch in text for ch in needle) for needle in self._needles)


def _line_start_form(pattern: str) -> str | None:
    """What follows a line's ``\\n`` in every line ``pattern`` matches (a superset), or
    ``None`` when the pattern is not simply anchored or might not combine with others.

    Only a pattern of one branch that starts with ``^`` qualifies, and only without what reads
    differently in a chunk than in a lone line (look-arounds, ``\\A``, ``\\Z``) or in an
    alternation with other patterns (back-references, whose group numbers would shift).
    """
    if not pattern.startswith("^") or "|" in pattern:
        return None
    prefix = literal_prefix(pattern)
    if prefix:
        return re.escape(prefix)
    if _UNCOMBINABLE.search(pattern):
        return None
    return f"(?:{_ungrouped(pattern[1:])})"


_UNCOMBINABLE = re.compile(r"\\[1-9AZ]|\(\?(?:P=|=|!|<)")
_LITERAL = re.compile(r"\^([^\\.^$*+?{}\[\]|()]+)")


def literal_prefix(pattern: str) -> str:
    """The literal text every match of ``pattern`` starts a line with, or ``""``.

    Only for a pattern of one branch that starts with ``^`` and plain characters; a character
    a quantifier follows is not part of it.
    """
    found = _LITERAL.match(pattern)
    if found is None or "|" in pattern:
        return ""
    prefix = found.group(1)
    if pattern[found.end() : found.end() + 1] in ("?", "*", "{"):
        prefix = prefix[:-1]
    return prefix


def _ungrouped(pattern: str) -> str:
    """``pattern`` with its named groups made plain groups (``(?P<x>`` -> ``(``)."""
    return re.sub(r"\(\?P<[A-Za-z_][A-Za-z0-9_]*>", "(", pattern)
