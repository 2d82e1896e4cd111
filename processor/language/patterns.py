"""Finding the triggers whose pattern matches an event type, without scanning them all.

Three kinds of pattern, three structures:
- exact types (`order.created`): a dict lookup;
- globs (`error.*`, `*.failed`): grouped by their literal prefix (the text before the
  first `*`); an event type of length L looks up its L+1 prefixes, then checks only the
  globs in those groups;
- `re:` regular expressions: run on RE2 (linear time, so no pattern can hang a worker),
  all compiled into one RE2 set that finds every matching regex in a single pass over
  the type (rebuilt, when regexes changed, at the next lookup).
Cost per event grows with the length of the type and the number of triggers that
truly match it, not with the number of triggers (bench/matching.py shows it).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import re2

REGEX_PREFIX = "re:"
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False  # we report the error ourselves, with the trigger's location


def compile_pattern(pattern: str) -> Callable[[str], bool]:
    """A predicate for one pattern; raises ValueError for a regex RE2 cannot run."""
    if pattern.startswith(REGEX_PREFIX):
        try:
            compiled = re2.compile(pattern[len(REGEX_PREFIX) :], _RE2_OPTIONS)
        except re2.error as exc:
            reason = exc.args[0].decode() if isinstance(exc.args[0], bytes) else exc.args[0]
            raise ValueError(
                f"regular expression {pattern[len(REGEX_PREFIX) :]!r} cannot run on RE2: {reason} "
                "(backreferences and lookaround are not supported)"
            ) from None
        return lambda value: compiled.fullmatch(value) is not None
    if "*" not in pattern:
        return lambda value: value == pattern
    # Our own translation of a glob: only `.*` runs, anchored; Python's re is safe here.
    glob = re.compile(
        "".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", pattern)),
        re.DOTALL,
    )
    return lambda value: glob.fullmatch(value) is not None


class PatternIndex:
    """Trigger ids by pattern; `candidates(type)` returns those whose pattern matches."""

    def __init__(self) -> None:
        self._exact: dict[str, set[str]] = defaultdict(set)
        self._globs: dict[str, dict[str, Callable[[str], bool]]] = defaultdict(dict)
        self._regexes: dict[str, str] = {}
        self._regex_set: Any = None
        self._regex_ids: list[str] = []
        self._where: dict[str, tuple[str, str]] = {}

    def __len__(self) -> int:
        return len(self._where)

    def add(self, trigger_id: str, pattern: str) -> None:
        self.remove(trigger_id)
        if pattern.startswith(REGEX_PREFIX):
            compile_pattern(pattern)  # raises ValueError for what RE2 cannot run
            self._regexes[trigger_id] = pattern[len(REGEX_PREFIX) :]
            self._regex_set = None
            self._where[trigger_id] = ("regex", "")
        elif "*" in pattern:
            prefix = pattern[: pattern.index("*")]
            self._globs[prefix][trigger_id] = compile_pattern(pattern)
            self._where[trigger_id] = ("glob", prefix)
        else:
            self._exact[pattern].add(trigger_id)
            self._where[trigger_id] = ("exact", pattern)

    def remove(self, trigger_id: str) -> None:
        kind, key = self._where.pop(trigger_id, ("", ""))
        if kind == "exact":
            self._exact[key].discard(trigger_id)
            if not self._exact[key]:
                del self._exact[key]
        elif kind == "glob":
            self._globs[key].pop(trigger_id, None)
            if not self._globs[key]:
                del self._globs[key]
        elif kind == "regex":
            self._regexes.pop(trigger_id, None)
            self._regex_set = None

    def candidates(self, event_type: str) -> set[str]:
        found = set(self._exact.get(event_type, ()))
        if self._globs:
            for end in range(len(event_type) + 1):
                group = self._globs.get(event_type[:end])
                if group:
                    found.update(tid for tid, match in group.items() if match(event_type))
        if self._regexes:
            if self._regex_set is None:
                self._compile_regexes()
            for index in self._regex_set.Match(event_type) or ():
                found.add(self._regex_ids[index])
        return found

    def _compile_regexes(self) -> None:
        regex_set = re2.Set.FullMatchSet(_RE2_OPTIONS)
        self._regex_ids = []
        for trigger_id, regex in self._regexes.items():
            regex_set.Add(regex)
            self._regex_ids.append(trigger_id)
        regex_set.Compile()
        self._regex_set = regex_set
