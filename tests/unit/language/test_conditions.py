from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.language.conditions import (
    DEFAULT_SEVERITY_SCALE,
    GROUP_MAX_CHARS,
    OPERATORS,
    ConditionError,
    Leaf,
    parse_condition,
)

EVENT = {
    "specversion": "1.0",
    "id": "e-1",
    "type": "error.database",
    "source": "system",
    "region": "eu",
    "data": {
        "severity": "high",
        "count": 7,
        "tags": ["db", "urgent"],
        "host": "db-12",
        "nested": {"depth": 3},
        "flag": True,
        "note": None,
    },
}


def matches(condition: Any, event: dict[str, Any] = EVENT) -> bool:
    return parse_condition(condition).matches(event)


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ({"severity": ">= high"}, True),
        ({"severity": "> high"}, False),
        ({"severity": ">= critical"}, False),
        ({"severity": "< critical"}, True),
        ({"severity": "high"}, True),
        ({"severity": "== HIGH"}, True),
        ({"severity": "in [low, high]"}, True),
        ({"severity": ["low", "medium"]}, False),
        ({"source": "system"}, True),
        ({"source": "!= system"}, False),
        ({"region": "eu"}, True),
        ({"count": "> 5"}, True),
        ({"count": "<= 6"}, False),
        ({"count": 7}, True),
        ({"data.count": ">= 7"}, True),
        ({"nested.depth": "== 3"}, True),
        ({"data.tags.1": "urgent"}, True),
        ({"$.data.tags[0]": "== db"}, True),
        ({"tags": "contains urgent"}, True),
        ({"host": "contains db"}, True),
        ({"host": "matches ^db-[0-9]+$"}, True),
        ({"host": "matches ^web"}, False),
        ({"host": "exists"}, True),
        ({"missing": "exists"}, False),
        ({"missing": "not exists"}, True),
        ({"note": "exists"}, False),
        ({"flag": True}, True),
        ({"severity": ">= high", "source": "system"}, True),
        ({"severity": ">= high", "source": "agents"}, False),
        ([{"severity": "high"}, {"count": "> 1"}], True),
        ({"any": [{"source": "agents"}, {"count": "> 1"}]}, True),
        ({"any": [{"source": "agents"}, {"count": "> 100"}]}, False),
        ({"all": [{"source": "system"}, {"not": {"region": "us"}}]}, True),
        ({"field": "severity", "operator": "gte", "value": "medium"}, True),
        ({"field": "count", "operator": "lt", "value": 3}, False),
        ({"field": "tags", "operator": "contains", "value": "db"}, True),
        ({"field": "source", "operator": "eq", "value": "system"}, True),
        ({"any": [{"field": "source", "operator": "ne", "value": "system"}]}, False),
    ],
)
def test_condition_language(condition: Any, expected: bool) -> None:
    assert matches(condition) is expected


@pytest.mark.parametrize(
    "condition",
    [
        {"missing": ">= 3"},
        {"missing.deeper": "== x"},
        {"count": "> high"},
        {"host": "> 3"},
        {"severity": ">= catastrophic"},
        {"flag": "> 0"},
        {"count": "contains 7"},
        {"nested": "matches x"},
        {"$.data.nope[3]": "== 1"},
    ],
)
def test_missing_fields_type_mismatches_and_unknown_ranks_never_match(condition: Any) -> None:
    assert matches(condition) is False


def test_severity_uses_the_documented_default_scale() -> None:
    low, *_, high = DEFAULT_SEVERITY_SCALE
    assert matches({"severity": f"> {low}"}) and not matches({"severity": f">= {high}"})
    assert matches({"severity": ">= error"}, {"data": {"severity": "fatal"}})
    assert matches({"severity": ">= warning"}, {"data": {"severity": "warn"}})


def test_custom_scales_per_trigger() -> None:
    condition = {"priority": ">= p2", "scales": {"priority": ["p4", "p3", "p2", "p1"]}}
    assert matches(condition, {"data": {"priority": "p1"}})
    assert not matches(condition, {"data": {"priority": "p3"}})
    assert not matches(condition, {"data": {"priority": "p0"}})


def test_attributes_come_before_data() -> None:
    assert matches({"source": "system"}, {"source": "system", "data": {"source": "other"}})


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ({"field": "a", "operator": "approx", "value": 1}, "operator: unknown operator 'approx'"),
        ({"a": {"b": 1}}, "a: write the test as a string"),
        ({"a": "in b"}, "a: `in` needs a list"),
        ({"a": "matches (x)\\1"}, "cannot run on RE2"),
        ({"any": "x"}, "any: expected a list of conditions"),
        ({"count_threshold": 5}, "window: a threshold needs a window"),
        ({"count_threshold": 0, "window": "1m"}, "count_threshold: write a whole number"),
        (
            {"count_threshold": 5001, "window": "1h"},
            "count_threshold: 5001 is more than the 5000 events a window keeps per group",
        ),
        ({"count_threshold": 2, "window": "5 minutes"}, "window: '5 minutes' is not a duration"),
        ({"window": "1m", "cooldown": "soon"}, "cooldown: 'soon' is not a duration"),
        ({"window": "1m", "aggregate": "median(x) > 3"}, "aggregate: write it like"),
        ({"scales": {"p": "p1,p2"}}, "scales: write `field: [lowest, ..., highest]`"),
        ({"$.data[": "== 1"}, "is not a JSONPath"),
    ],
)
def test_bad_conditions_say_where_and_how_to_fix(condition: Any, message: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition(condition, "")
    assert message in str(caught.value)


def test_threshold_settings_are_parsed_out_of_the_mapping() -> None:
    condition = parse_condition(
        {
            "severity": ">= high",
            "count_threshold": 5,
            "window": "5m",
            "group_by": "data.host",
            "cooldown": "10m",
            "aggregate": "sum(data.count) >= 20",
        }
    )
    threshold = condition.threshold
    assert threshold is not None
    assert (threshold.count, threshold.window_seconds, threshold.cooldown_seconds) == (5, 300, 600)
    assert threshold.group_of(EVENT) == "db-12"
    assert threshold.aggregate is not None and threshold.aggregate.holds([10, 10])
    assert condition.matches(EVENT)
    assert parse_condition({"severity": "high"}).threshold is None


def test_a_group_key_reads_values_as_json_writes_them_and_null_as_absent() -> None:
    threshold = parse_condition(
        {"count_threshold": 2, "window": "1m", "group_by": ["data.host", "data.zone"]}
    ).threshold
    assert threshold is not None

    def group(**data: object) -> str:
        return threshold.group_of({"data": data})

    assert group(host="web-1", zone=3) == "web-1\x1f3"
    assert group(host=None) == group() == "\x1f"  # null and absent: one group, not 'None'
    assert group(host=True, zone={"b": 1, "a": [2]}) == 'true\x1f{"a":[2],"b":1}'
    one = parse_condition({"count_threshold": 2, "window": "1m", "group_by": "data.host"})
    assert (
        one.threshold is not None and one.threshold.group_of({"data": {"host": False}}) == "false"
    )


def test_values_holding_the_separator_stay_apart_in_a_multi_field_group_key() -> None:
    threshold = parse_condition(
        {"count_threshold": 2, "window": "1m", "group_by": ["data.a", "data.b"]}
    ).threshold
    assert threshold is not None

    def group(a: object, b: object) -> str:
        return threshold.group_of({"data": {"a": a, "b": b}})

    assert group("x\x1fy", "z") != group("x", "y\x1fz")
    assert group("x\x1e", "-") != group("x", "\x1e-")
    assert group("web-1", "eu") == "web-1\x1feu"  # keys without either are as they were


def test_a_group_key_past_its_bound_keeps_its_start_and_a_digest_of_the_whole() -> None:
    threshold = parse_condition(
        {"count_threshold": 2, "window": "1m", "group_by": "data.host"}
    ).threshold
    assert threshold is not None

    def group(host: str) -> str:
        return threshold.group_of({"data": {"host": host}})

    assert group("h" * GROUP_MAX_CHARS) == "h" * GROUP_MAX_CHARS  # as it was, up to the bound
    long, other = "h" * 600_000, "h" * 599_999 + "i"
    assert len(group(long)) < 400 and group(long).startswith("h" * 256 + "…sha256:")
    assert group(long) != group(other) and group(long) == group(long)


texts = st.text(alphabet="ab\x1e\x1f-", max_size=4)


@given(texts, texts)
def test_a_multi_field_group_key_splits_back_into_its_values(a: str, b: str) -> None:
    threshold = parse_condition(
        {"count_threshold": 2, "window": "1m", "group_by": ["data.a", "data.b"]}
    ).threshold
    assert threshold is not None
    parts = threshold.group_of({"data": {"a": a, "b": b}}).split("\x1f")
    escapes = re.compile("\x1e(.)", re.DOTALL)
    assert [escapes.sub(lambda m: "\x1f" if m[1] == "-" else m[1], p) for p in parts] == [a, b]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
tests = st.sampled_from(
    [
        "== x",
        "!= 3",
        "> 2",
        ">= high",
        "< 1.5",
        "<= b",
        "in [a, 1, null]",
        "contains a",
        "matches ^a",
        "exists",
        "not exists",
        "high",
        "[1, 2]",
    ]
)


@given(
    st.dictionaries(
        st.sampled_from(["severity", "a", "data.a", "$.data.a[0]", "x.y"]),
        tests,
        min_size=1,
        max_size=3,
    ),
    json_values,
    json_values,
)
def test_evaluation_never_raises(condition: dict[str, str], data: Any, attribute: Any) -> None:
    parsed = parse_condition(condition)
    result = parsed.matches({"type": "t", "severity": attribute, "a": attribute, "data": data})
    assert result in (True, False)


_SEVERITY_WORDS = st.sampled_from(
    [*DEFAULT_SEVERITY_SCALE, "HIGH", "Warn", "err", "fatal", "catastrophic", ""]
)


@given(
    op=st.sampled_from(OPERATORS[:6]),
    operand=_SEVERITY_WORDS,
    actual=st.one_of(_SEVERITY_WORDS, json_values),
)
def test_a_scaled_comparison_decides_as_its_test_does(op: str, operand: str, actual: Any) -> None:
    """Leaves compile an ordering on a scale into one closure: it must decide as `test`."""
    parsed = parse_condition({"severity": f"{op} {operand or 'high'}"})
    leaf = parsed.predicate
    assert isinstance(leaf, Leaf)
    event = {"type": "t", "severity": actual}
    assert leaf.evaluate(event) is leaf.test(actual)
    assert parsed.matches(event) is leaf.test(actual)
