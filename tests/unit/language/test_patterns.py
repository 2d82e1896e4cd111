from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.language.patterns import PatternIndex, compile_pattern


@pytest.mark.parametrize(
    ("pattern", "matching", "not_matching"),
    [
        ("error.*", ["error.database", "error.", "error.a.b"], ["errors.x", "warning.error.x"]),
        ("*.failed", ["job.failed", "a.b.failed"], ["job.failed.twice"]),
        ("order.created", ["order.created"], ["order.created.v2", "order"]),
        ("a*b*c", ["abc", "aXbYc"], ["acb"]),
        ("re:error\\.(db|cache)", ["error.db", "error.cache"], ["error.dbx", "xerror.db"]),
        ("error.[x]", ["error.[x]"], ["error.x"]),
    ],
)
def test_patterns(pattern: str, matching: list[str], not_matching: list[str]) -> None:
    match = compile_pattern(pattern)
    assert all(match(t) for t in matching)
    assert not any(match(t) for t in not_matching)


@pytest.mark.parametrize("pattern", ["re:(a)\\1", "re:a(?=b)", "re:(?<!x)y"])
def test_regexes_re2_cannot_run_are_rejected(pattern: str) -> None:
    with pytest.raises(ValueError, match="cannot run on RE2"):
        compile_pattern(pattern)


def test_catastrophic_backtracking_pattern_runs_in_linear_time() -> None:
    match = compile_pattern("re:(a+)+$")
    assert not match("a" * 50_000 + "!")


def test_index_add_replace_remove() -> None:
    index = PatternIndex()
    index.add("t1", "error.*")
    index.add("t2", "error.database")
    index.add("t3", "re:.*\\.database")
    assert index.candidates("error.database") == {"t1", "t2", "t3"}
    index.add("t1", "warning.*")
    assert index.candidates("error.database") == {"t2", "t3"}
    index.remove("t2")
    index.remove("t3")
    index.remove("missing")
    assert index.candidates("error.database") == set()
    assert index.candidates("warning.x") == {"t1"} and len(index) == 1


alphabet = st.sampled_from(["a", "b", ".", "*"])
globs = st.text(alphabet, min_size=1, max_size=6)
regexes = st.sampled_from(["re:a+", "re:(a|b)\\..*", "re:.*b", "re:a\\.b", "re:[ab]{2,3}"])
patterns = st.one_of(globs, globs, regexes)
types = st.text(st.sampled_from(["a", "b", "."]), max_size=7)


@given(st.lists(patterns, min_size=1, max_size=12), st.lists(types, min_size=1, max_size=8))
def test_index_agrees_with_checking_every_pattern(
    pattern_list: list[str], type_list: list[str]
) -> None:
    index = PatternIndex()
    for i, pattern in enumerate(pattern_list):
        index.add(f"t{i}", pattern)
    index.remove("t0")  # removals (and the regex set's rebuild) keep it exact
    pattern_list[0] = "\x00never"
    index.add("t0", pattern_list[0])
    for event_type in type_list:
        expected = {f"t{i}" for i, p in enumerate(pattern_list) if compile_pattern(p)(event_type)}
        assert index.candidates(event_type) == expected
