"""The condition language of event triggers: parsing (with teaching errors) and evaluation.

A trigger's `condition` is a mapping (or a list, meaning "all of these"):

    condition:
      severity: ">= high"              # shorthand: operator and value in one string
      data.region: "in [eu, us]"       # dotted path; `in`, `contains`, `matches`, `exists`
      $.data.tags[0]: "== urgent"      # JSONPath
      any:                             # all / any / not combine conditions
        - {field: source, operator: eq, value: system}   # the product note's form
        - host: "matches ^db-[0-9]+$"                     # RE2 regular expression
      count_threshold: 5               # threshold settings live in the same mapping
      window: 5m

Fields: a bare name is looked up in the event's attributes (CloudEvents and extension
attributes), then in `data`; `a.b.c` walks nested objects; `$...` is JSONPath over the
whole event. Comparisons never raise: a missing field, a value of another type, or an
unknown rank on an ordinal scale simply does not match (and `explain` says which).

Ordinal scales: `severity` compares by rank on `DEFAULT_SEVERITY_SCALE`, so ">= high"
matches high and critical. A trigger can define its own scales with `scales:`.
"""

from __future__ import annotations

import hashlib
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import jsonpath
import orjson
import re2
import yaml

from processor.language.durations import parse_duration
from processor.language.patterns import compile_pattern

DEFAULT_SEVERITY_SCALE: tuple[str, ...] = (
    "debug",
    "info",
    "notice",
    "low",
    "warning",
    "medium",
    "error",
    "high",
    "critical",
    "alert",
    "emergency",
)
"""Lowest to highest. Aliases: warn = warning, err = error, fatal = critical."""
SEVERITY_ALIASES = {"warn": "warning", "err": "error", "fatal": "critical"}

OPERATORS = ("==", "!=", ">=", "<=", ">", "<", "in", "contains", "matches", "exists")
NOTE_OPERATORS = {
    "eq": "==",
    "ne": "!=",
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "in": "in",
    "contains": "contains",
    "matches": "matches",
    "exists": "exists",
}
THRESHOLD_KEYS = ("count_threshold", "window", "group_by", "cooldown", "aggregate")
COUNT_THRESHOLD_MAX = 5000
"""The most events a window keeps per group (windows.MAX_PENDING): a larger threshold
could never be reached."""
RESERVED_KEYS = (*THRESHOLD_KEYS, "scales", "all", "any", "not")
AGGREGATE = re.compile(r"^\s*(sum|avg|min|max)\(\s*([^)]+?)\s*\)\s*(==|!=|>=|<=|>|<)\s*(.+?)\s*$")
_SHORTHAND = re.compile(
    r"^\s*(==|!=|>=|<=|>|<|in\b|contains\b|matches\b|exists\b|not exists\b)\s*(.*)$", re.S
)
MISSING = object()


class ConditionError(ValueError):
    """A condition that cannot be parsed; the message says where and how to fix it."""


# -- field access ----------------------------------------------------------------------


@lru_cache(maxsize=4096)
def field_reader(path: str) -> Callable[[Mapping[str, Any]], Any]:
    """A function reading `path` from an event (as a dict); MISSING when absent."""
    if path.startswith("$"):
        try:
            compiled = jsonpath.compile(path)
        except jsonpath.JSONPathError as exc:
            raise ConditionError(
                f"{path!r} is not a JSONPath ({str(exc).splitlines()[0]})"
            ) from None

        def read_jsonpath(event: Mapping[str, Any]) -> Any:
            found = compiled.findall(event)
            return found[0] if found else MISSING

        return read_jsonpath
    parts = path.split(".")

    def walk(value: Any, rest: list[str]) -> Any:
        for part in rest:
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
                value = value[int(part)]
            else:
                return MISSING
        return value

    def read(event: Mapping[str, Any]) -> Any:
        found = walk(event, parts)
        if found is MISSING and isinstance(event.get("data"), Mapping):
            found = walk(event["data"], parts)
        return found

    if len(parts) > 1:
        return read
    name = parts[0]

    def read_name(event: Mapping[str, Any]) -> Any:
        """`read` for a plain name (most paths), without the walk."""
        if type(event) is not dict:
            return read(event)
        found = event.get(name, MISSING)
        if found is MISSING:
            data = event.get("data")
            if type(data) is dict:
                return data.get(name, MISSING)
            if isinstance(data, Mapping):
                return walk(data, parts)
        return found

    return read_name


# -- comparisons -----------------------------------------------------------------------


@dataclass(frozen=True)
class Scale:
    """An ordinal scale: values compare by their rank; unknown values never match."""

    ranks: Mapping[str, int]
    aliases: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def of(
        cls, values: list[str] | tuple[str, ...], aliases: Mapping[str, str] | None = None
    ) -> Scale:
        return cls({v.lower(): i for i, v in enumerate(values)}, aliases or {})

    def rank(self, value: Any) -> int | None:
        if not isinstance(value, str):
            return None
        name = value.lower()
        return self.ranks.get(self.aliases.get(name, name))


DEFAULT_SCALES = {"severity": Scale.of(DEFAULT_SEVERITY_SCALE, SEVERITY_ALIASES)}


def _ordered(left: Any, right: Any) -> bool:
    """Both numbers (not booleans), or both strings: values that can be ordered."""
    numbers = (int, float)
    if isinstance(left, bool) or isinstance(right, bool):
        return False
    return (isinstance(left, numbers) and isinstance(right, numbers)) or (
        isinstance(left, str) and isinstance(right, str)
    )


def _compare(op: str, left: Any, right: Any) -> bool:
    if op == "==":
        return bool(left == right)
    if op == "!=":
        return bool(left != right)
    if not _ordered(left, right):
        return False
    if op == ">":
        return bool(left > right)
    if op == ">=":
        return bool(left >= right)
    if op == "<":
        return bool(left < right)
    return bool(left <= right)


_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def _never(actual: Any) -> bool:
    return False


# -- the condition tree ----------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """One leaf's result, for `explain`: the field, the test, the value seen (MISSING when
    the event has no such field), the verdict."""

    path: str
    test: str
    actual: Any
    matched: bool


class Node:
    def evaluate(self, event: Mapping[str, Any], trace: list[Outcome] | None = None) -> bool:
        raise NotImplementedError


@dataclass(frozen=True)
class Leaf(Node):
    path: str
    op: str
    value: Any
    read: Callable[[Mapping[str, Any]], Any]
    scale: Scale | None = None
    regex: Any = None

    def __post_init__(self) -> None:
        # The operand's rank on the scale, found once rather than per event.
        right = self.scale.rank(self.value) if self.scale is not None else None
        object.__setattr__(self, "_right_rank", right)
        object.__setattr__(self, "_check", self._compiled() or self.test)

    def _compiled(self) -> Callable[[Any], bool] | None:
        """`test` for an ordering on a scale (`severity: ">= high"`, the common case) as
        one closure instead of four calls per event; None for the other tests. A unit
        test holds it to `test` over every op and many values."""
        compare = _ORDERING.get(self.op)
        if compare is None or self.scale is None:
            return None
        right = self._right_rank  # type: ignore[attr-defined]
        if right is None:
            return _never
        ranks, aliases = self.scale.ranks, self.scale.aliases

        def check(actual: Any) -> bool:
            if not isinstance(actual, str):
                return False
            name = actual.lower()
            rank = ranks.get(aliases.get(name, name))
            return rank is not None and bool(compare(rank, right))

        return check

    def test(self, actual: Any) -> bool:
        op, value = self.op, self.value
        if op == "exists":
            return (actual is not MISSING and actual is not None) == bool(value)
        if actual is MISSING:
            return False
        if op == "in":
            return any(self._equal(actual, candidate) for candidate in value)
        if op == "contains":
            if isinstance(actual, str) and isinstance(value, str):
                return value in actual
            return isinstance(actual, list) and value in actual
        if op == "matches":
            return isinstance(actual, str) and self.regex.search(actual) is not None
        if self.scale is not None:
            left, right = self.scale.rank(actual), self._right_rank  # type: ignore[attr-defined]
            return left is not None and right is not None and _compare(op, left, right)
        return _compare(op, actual, value)

    def _equal(self, actual: Any, candidate: Any) -> bool:
        if self.scale is not None:
            rank = self.scale.rank(actual)
            return rank is not None and rank == self.scale.rank(candidate)
        return bool(actual == candidate)

    def evaluate(self, event: Mapping[str, Any], trace: list[Outcome] | None = None) -> bool:
        actual = self.read(event)
        matched: bool = self._check(actual)  # type: ignore[attr-defined]
        if trace is not None:
            trace.append(Outcome(self.path, f"{self.op} {self.value!r}", actual, matched))
        return matched


@dataclass(frozen=True)
class All(Node):
    children: tuple[Node, ...]

    def evaluate(self, event: Mapping[str, Any], trace: list[Outcome] | None = None) -> bool:
        if trace is None:
            for child in self.children:  # noqa: SIM110 - a generator costs more per event
                if not child.evaluate(event):
                    return False
            return True
        results = [child.evaluate(event, trace) for child in self.children]  # trace every leaf
        return all(results)


@dataclass(frozen=True)
class Any_(Node):
    children: tuple[Node, ...]

    def evaluate(self, event: Mapping[str, Any], trace: list[Outcome] | None = None) -> bool:
        if trace is None:
            return any(child.evaluate(event) for child in self.children)
        results = [child.evaluate(event, trace) for child in self.children]
        return any(results)


@dataclass(frozen=True)
class Not(Node):
    child: Node

    def evaluate(self, event: Mapping[str, Any], trace: list[Outcome] | None = None) -> bool:
        return not self.child.evaluate(event, trace)


TRUE = All(())


# -- thresholds ------------------------------------------------------------------------


@dataclass(frozen=True)
class Aggregate:
    """`sum|avg|min|max(field) <op> value` over the events in the window."""

    function: str
    path: str
    op: str
    value_threshold: float
    read: Callable[[Mapping[str, Any]], Any]

    @property
    def named(self) -> str:
        """`sum(data.amount)`: what it computes, as the trigger writes it."""
        return f"{self.function}({self.path})"

    @property
    def expression(self) -> str:
        """`sum(data.amount) >= 1000`: the whole test, as the trigger writes it."""
        return f"{self.named} {self.op} {self.value_threshold:g}"

    def value(self, values: list[float]) -> float:
        """The aggregate of (non-empty) values."""
        if self.function == "sum":
            return float(sum(values))
        if self.function == "avg":
            return sum(values) / len(values)
        return float(min(values) if self.function == "min" else max(values))

    def holds(self, values: list[float]) -> bool:
        return bool(values) and _compare(self.op, self.value(values), self.value_threshold)


@dataclass(frozen=True)
class Threshold:
    """Count (and optionally aggregate) over a sliding event-time window, per group."""

    count: int
    window_seconds: float
    group_by: tuple[str, ...] = ()
    cooldown_seconds: float = 0.0
    aggregate: Aggregate | None = None
    group_readers: tuple[Callable[[Mapping[str, Any]], Any], ...] = ()

    def group_of(self, event: Mapping[str, Any]) -> str:
        """The group key: the group_by values, or '' for one window per trigger."""
        readers = self.group_readers
        if not readers:
            return ""
        if len(readers) == 1:
            group = group_text(readers[0](event))
            return group if len(group) <= GROUP_MAX_CHARS else bounded_group(group)
        return bounded_group(
            "\x1f".join([_joinable(group_text(reader(event))) for reader in readers])
        )


GROUP_MAX_CHARS = 1024
"""A group key longer than this is kept as its first 256 characters and a digest of the
whole: the key travels in the window's records and every fire of it, and a group_by
field of megabytes (an event may hold up to 1 MiB) made records the broker refused."""


def bounded_group(group: str) -> str:
    """The group key as state and fires carry it: itself up to GROUP_MAX_CHARS, else its
    first 256 characters, '…' and the SHA-256 of all of it (distinct values stay
    distinct; every key of a deployment before this rule is at most that long or was
    refused with its records)."""
    if len(group) <= GROUP_MAX_CHARS:
        return group
    digest = hashlib.sha256(group.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{group[:256]}…sha256:{digest}"


def _joinable(part: str) -> str:
    """One value of a multi-field group key, fit to be joined by U+001F: a value holding
    U+001F or the escape U+001E has them escaped (U+001E U+001E, U+001E '-'), so
    ("a\x1fb", "c") and ("a", "b\x1fc") stay two groups. Every other value is as it is,
    so the keys of the state already kept do not change."""
    if "\x1f" not in part and "\x1e" not in part:
        return part
    return part.replace("\x1e", "\x1e\x1e").replace("\x1f", "\x1e-")


def group_text(value: Any) -> str:
    """A field's value as (part of) a group key: a string as it is, a number as written;
    an absent field and null alike ''; true/false, objects and lists as JSON, never as
    Python writes them ('None', 'True', "{'a': 1}")."""
    if type(value) is str:
        return value
    if value is MISSING or value is None:
        return ""
    if isinstance(value, bool | dict | list):
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return str(value)


@dataclass(frozen=True)
class Condition:
    """A parsed condition: the predicate, and the threshold when there is one."""

    predicate: Node = TRUE
    threshold: Threshold | None = None

    def matches(self, event: Mapping[str, Any]) -> bool:
        try:
            return self.predicate.evaluate(event)
        except (TypeError, ValueError, re2.error):
            return False

    def paths(self) -> list[str]:
        """The fields the predicate reads, in order (the threshold's are not here)."""
        found: list[str] = []
        stack: list[Node] = [self.predicate]
        while stack:
            node = stack.pop()
            if isinstance(node, Leaf):
                found.append(node.path)
            elif isinstance(node, All | Any_):
                stack.extend(reversed(node.children))
            elif isinstance(node, Not):
                stack.append(node.child)
        return found


# -- parsing ---------------------------------------------------------------------------


def _parse_value(text: str) -> Any:
    """A shorthand operand: YAML scalar or flow list (`high`, `5`, `[a, b]`, `"x y"`)."""
    text = text.strip()
    if not text:
        return ""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _leaf(path: str, op: str, value: Any, scales: Mapping[str, Scale], where: str) -> Leaf:
    if op not in OPERATORS:
        raise ConditionError(
            f"{where}: unknown operator {op!r}; use one of {', '.join(OPERATORS)} "
            f"(or the note's {', '.join(NOTE_OPERATORS)})"
        )
    regex = None
    if op == "in" and not isinstance(value, list):
        raise ConditionError(f'{where}: `in` needs a list, like "in [a, b]"')
    if op == "matches":
        if not isinstance(value, str):
            raise ConditionError(f"{where}: `matches` needs a regular expression")
        try:
            compile_pattern("re:" + value)
        except ValueError as exc:
            raise ConditionError(f"{where}: {exc}") from None
        regex = re2.compile(value)
    if op == "exists":
        value = True if value in (None, "", True) else bool(value)
    scale = scales.get(path.rsplit(".", 1)[-1].lstrip("$"))
    return Leaf(path, op, value, field_reader(path), scale, regex)


def _shorthand(path: str, raw: Any, scales: Mapping[str, Scale], where: str) -> Leaf:
    if isinstance(raw, list):
        return _leaf(path, "in", raw, scales, where)
    if isinstance(raw, Mapping):
        raise ConditionError(
            f'{where}: write the test as a string like ">= high" or "in [a, b]", a value, '
            "or a list; for the note's form use {field, operator, value} in place of the field"
        )
    if not isinstance(raw, str):
        return _leaf(path, "==", raw, scales, where)
    match = _SHORTHAND.match(raw)
    if match is None:
        return _leaf(path, "==", raw, scales, where)
    op, operand = match.group(1), match.group(2)
    if op == "not exists":
        return _leaf(path, "exists", False, scales, where)
    if op == "matches":
        return _leaf(path, op, operand.strip(), scales, where)
    return _leaf(path, op, _parse_value(operand) if op != "exists" else True, scales, where)


def _at(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _node(raw: Any, scales: Mapping[str, Scale], where: str) -> Node:
    if isinstance(raw, list):
        return All(tuple(_node(item, scales, f"{where}[{i}]") for i, item in enumerate(raw)))
    if not isinstance(raw, Mapping):
        raise ConditionError(f"{where}: expected a mapping of field: test, or all/any/not")
    if "field" in raw and "operator" in raw:
        extra = set(raw) - {"field", "operator", "value"}
        if extra:
            raise ConditionError(f"{where}: unexpected {sorted(extra)} beside field/operator/value")
        operator = str(raw["operator"])
        op = NOTE_OPERATORS.get(operator, operator)
        return _leaf(str(raw["field"]), op, raw.get("value"), scales, _at(where, "operator"))
    children: list[Node] = []
    for key, value in raw.items():
        path = _at(where, str(key))
        if key in THRESHOLD_KEYS or key == "scales":
            continue
        if key == "all":
            children.append(
                All(
                    tuple(
                        _node(v, scales, f"{path}[{i}]") for i, v in enumerate(_list(value, path))
                    )
                )
            )
        elif key == "any":
            children.append(
                Any_(
                    tuple(
                        _node(v, scales, f"{path}[{i}]") for i, v in enumerate(_list(value, path))
                    )
                )
            )
        elif key == "not":
            children.append(Not(_node(value, scales, path)))
        else:
            children.append(_shorthand(str(key), value, scales, path))
    return children[0] if len(children) == 1 else All(tuple(children))


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConditionError(f"{where}: expected a list of conditions")
    return value


def _scales(raw: Any, where: str) -> dict[str, Scale]:
    scales = dict(DEFAULT_SCALES)
    if raw is None:
        return scales
    if not isinstance(raw, Mapping) or not all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in raw.values()
    ):
        raise ConditionError(f"{_at(where, 'scales')}: write `field: [lowest, ..., highest]`")
    scales.update({str(name): Scale.of(values) for name, values in raw.items()})
    return scales


def _threshold(raw: Mapping[str, Any], where: str) -> Threshold | None:
    if not any(key in raw for key in THRESHOLD_KEYS):
        return None
    count = raw.get("count_threshold", 1)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConditionError(
            f"{_at(where, 'count_threshold')}: write a whole number of events, 1 or more"
        )
    if count > COUNT_THRESHOLD_MAX:
        raise ConditionError(
            f"{_at(where, 'count_threshold')}: {count} is more than the {COUNT_THRESHOLD_MAX} "
            "events a window keeps per group, so it could never be reached: use a shorter "
            "window with a lower count, or split the events with group_by"
        )
    if "window" not in raw:
        raise ConditionError(f"{_at(where, 'window')}: a threshold needs a window, like window: 5m")
    durations = {}
    for name in ("window", "cooldown"):
        try:
            durations[name] = parse_duration(str(raw[name])) if name in raw else 0.0
        except ValueError as exc:
            raise ConditionError(f"{_at(where, name)}: {exc}") from None
    window, cooldown = durations["window"], durations["cooldown"]
    if window <= 0:
        raise ConditionError(f"{_at(where, 'window')}: the window must be longer than zero")
    group_by = raw.get("group_by", ())
    group_by = (group_by,) if isinstance(group_by, str) else tuple(str(g) for g in group_by)
    aggregate = None
    if "aggregate" in raw:
        match = AGGREGATE.match(str(raw["aggregate"]))
        value = _parse_value(match.group(4)) if match else None
        if match is None or isinstance(value, bool) or not isinstance(value, int | float):
            raise ConditionError(
                f'{_at(where, "aggregate")}: write it like "sum(data.amount) >= 1000" '
                "(sum, avg, min or max of a field, compared to a number)"
            )
        aggregate = Aggregate(
            match.group(1),
            match.group(2),
            match.group(3),
            float(value),
            field_reader(match.group(2)),
        )
    return Threshold(
        count, window, group_by, cooldown, aggregate, tuple(field_reader(g) for g in group_by)
    )


def parse_condition(raw: Any, where: str = "condition") -> Condition:
    """Parse a trigger's condition; raises ConditionError naming the field path."""
    if raw is None:
        return Condition()
    scales = _scales(raw.get("scales") if isinstance(raw, Mapping) else None, where)
    predicate = _node(raw, scales, where)
    threshold = _threshold(raw, where) if isinstance(raw, Mapping) else None
    return Condition(predicate, threshold)
