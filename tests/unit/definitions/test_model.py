from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from processor.definitions.loader import load_paths, parse_document, repeated_triggers
from processor.definitions.model import (
    OverlapPolicy,
    TriggerType,
    document_json,
    trigger_id_for,
    warnings_for,
)
from processor.definitions.schema import trigger_file_schema
from processor.errors import DefinitionError
from processor.language.durations import Duration, parse_duration

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "t.yaml"
    path.write_text(text)
    with pytest.raises(DefinitionError) as caught:
        load_paths([path])
    return caught.value.problems


def test_the_three_seed_examples_load_unchanged() -> None:
    located = {item.document.name: item.document for item in load_paths([EXAMPLES])}
    assert set(located) == {"Daily Sales Report", "Error Handler", "Slack Command Handler"}
    error_handler = located["Error Handler"]
    assert error_handler.type is TriggerType.EVENT
    assert error_handler.event is not None and error_handler.event.source == ["system", "agents"]
    assert error_handler.max_concurrent == 1 and error_handler.timeout_seconds == 3600
    assert error_handler.overlap is OverlapPolicy.SKIP
    slack = located["Slack Command Handler"]
    assert slack.webhook is not None and slack.webhook.authentication is not None
    assert slack.webhook.authentication.secret == "${SLACK_WEBHOOK_SECRET}"
    assert slack.agent.input_mapping["channel"] == "$.body.channel_id"
    report = located["Daily Sales Report"]
    assert report.schedule is not None and report.schedule.timezone == "America/New_York"


def test_the_notes_python_field_names_are_accepted() -> None:
    document = parse_document(
        {
            "name": "n",
            "type": "schedule",
            "schedule_config": {"cron": "*/5 * * * *"},
            "agent_id": "agent-1",
            "input_template": {"a": 1},
            "workspace_id": "ws",
        },
        "inline",
    )
    assert document.agent.id == "agent-1" and document.agent.input == {"a": 1}
    assert document.workspace == "ws" and document.schedule is not None


def test_id_is_derived_from_workspace_and_name_and_stable() -> None:
    document = parse_document(
        {"name": "n", "type": "event", "event": {"pattern": "a"}, "agent": {"id": "x"}}, "inline"
    )
    resolved = document.resolved("alpha")
    assert resolved.id == trigger_id_for("alpha", "n") == document.resolved("alpha").id
    assert resolved.id != document.resolved("beta").id
    assert resolved.workspace == "alpha"


def test_unknown_keys_name_the_line_and_suggest_the_right_one(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "trigger:\n  name: x\n  type: event\n  enabeld: true\n"
        "  event:\n    pattern: 'a.*'\n  agent:\n    id: a\n",
    )
    assert problems == [
        f"{tmp_path}/t.yaml:4: trigger.enabeld: unknown field; did you mean `enabled`?"
    ]


def test_an_unknown_key_with_no_close_match_lists_each_known_field_once(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "trigger:\n  name: x\n  type: event\n  event:\n    pattern: 'a.*'\n"
        "  agent:\n    id: a\n    name: fraud-check\n",
    )
    assert problems == [
        f"{tmp_path}/t.yaml:8: trigger.agent.name: unknown field; "
        "known fields: id, input, input_mapping, input_template"
    ]


@pytest.mark.parametrize(
    ("schedule", "expected"),
    [
        ("cron: '61 * * * *'", "is not a cron expression"),
        ("cron: '0 0 30 2 *'", "names no date that exists (such as 30 February"),
        ("cron: '0 0 0 31 4 *'", "names no date that exists"),
        ("cron: '0 9 * * *'\n    timezone: Mars/Olympus", "is not an IANA timezone"),
        ("every: 5 minutes", "is not a duration"),
        ("every: 0.5s", "is shorter than a second; schedules tick once a second"),
        ("cron: '0 9 * * *'\n    every: 5m", "give exactly one of cron, every, at"),
        (
            "cron: '0 9 * * *'\n    start_date: 2026-02-01T00:00:00Z\n"
            "    end_date: 2026-01-01T00:00:00Z",
            "end_date must be after start_date",
        ),
    ],
)
def test_schedule_errors_say_what_is_wrong(tmp_path: Path, schedule: str, expected: str) -> None:
    problems = problems_of(
        tmp_path,
        f"trigger:\n  name: x\n  type: schedule\n  schedule:\n    {schedule}\n  agent: {{id: a}}\n",
    )
    assert len(problems) == 1 and expected in problems[0]
    assert problems[0].startswith(f"{tmp_path}/t.yaml:")


def test_type_and_section_must_agree(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "trigger:\n  name: x\n  type: event\n  schedule: {cron: '* * * * *'}\n  agent: {id: a}\n",
    )
    assert problems == [f"{tmp_path}/t.yaml:1: trigger: an event trigger needs a `event:` section"]


def test_unknown_type_and_missing_agent_are_errors(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "trigger:\n  name: x\n  type: telepathy\n")
    joined = "\n".join(problems)
    assert "trigger.type: Input should be 'schedule', 'webhook' or 'event'" in joined
    assert "trigger.agent: Field required" in joined


def test_secrets_must_be_environment_references(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "trigger:\n  name: x\n  type: webhook\n  webhook:\n    authentication:\n"
        "      type: hmac\n      secret: hunter2\n  agent: {id: a}\n",
    )
    assert "write secrets as an environment reference like ${SLACK_WEBHOOK_SECRET}" in problems[0]
    assert "hunter2" not in problems[0]


def test_multi_document_files_and_json_lists(tmp_path: Path) -> None:
    (tmp_path / "two.yaml").write_text(
        "name: a\ntype: event\nevent: {pattern: x}\nagent: {id: a}\n---\n"
        "trigger: {name: b, type: event, event: {pattern: y}, agent: {id: b}}\n"
    )
    (tmp_path / "list.json").write_text(
        '[{"name": "c", "type": "event", "event": {"pattern": "z"}, "agent": {"id": "c"}}]'
    )
    assert sorted(item.document.name for item in load_paths([tmp_path])) == ["a", "b", "c"]


def test_a_trailing_separator_is_an_empty_document_not_a_problem(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("name: a\ntype: event\nevent: {pattern: x}\nagent: {id: a}\n---\n")
    [only] = load_paths([path])
    assert (only.document.name, only.source) == ("a", str(path))


def test_a_key_given_twice_is_a_problem_with_both_lines(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "name: a\ntype: event\nevent:\n  pattern: x.a\n  pattern: x.b\nagent: {id: a}\n---\n"
        "name: b\ntype: event\nevent: {pattern: y}\nagent: {id: b, id: c}\n",
    )
    assert problems == [
        f"{tmp_path}/t.yaml:5: `pattern` is given twice in one mapping (first at line 4); keep one",
        f"{tmp_path}/t.yaml:11: `id` is given twice in one mapping (first at line 11); keep one",
    ]


def test_one_trigger_defined_twice_in_the_files_applied_is_a_problem(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "name: Same\ntype: event\nevent: {pattern: x}\nagent: {id: a}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "name: Same\ntype: event\nevent: {pattern: y}\nagent: {id: b}\n---\n"
        "name: Other\nid: fixed\ntype: event\nevent: {pattern: z}\nagent: {id: c}\n---\n"
        "name: Another\nid: fixed\ntype: event\nevent: {pattern: z}\nagent: {id: c}\n"
    )
    documents = [(i.document.resolved("default"), i.source) for i in load_paths([tmp_path])]
    problems = repeated_triggers(documents)
    assert len(problems) == 2
    assert problems[0].startswith(f"{tmp_path}/b.yaml (document 1): trigger 'Same' (id ")
    assert problems[0].endswith(f"is also defined by {tmp_path}/a.yaml; define each trigger "
                                "once: rename one, or give it its own `id`")  # fmt: skip
    assert "'Another' (id fixed) is also defined by" in problems[1]
    elsewhere = [
        (d.model_copy(update={"workspace": "w2", "id": None}).resolved("x"), s)
        for d, s in documents[:1]
    ]
    assert repeated_triggers(documents[:1] + elsewhere) == []  # one name in two workspaces


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, "trigger:\n  name: [unclosed\n")
    assert problems[0].startswith(f"{tmp_path}/t.yaml:") and "not valid YAML/JSON" in problems[0]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30s", 30), ("5m", 300), ("1.5h", 5400), ("250ms", 0.25), ("2d", 172800)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_checked_in_json_schema_matches_the_models() -> None:
    import orjson

    checked_in = orjson.loads((ROOT / "schemas" / "trigger.schema.json").read_bytes())
    assert checked_in == trigger_file_schema(), "run `make schemas` and commit the result"


def test_json_schema_accepts_the_examples() -> None:
    schema = trigger_file_schema()
    paths = sorted(EXAMPLES.glob("*.yaml"))
    assert len(paths) == 3
    for path in paths:
        document = yaml.safe_load(path.read_text())
        assert set(document) <= set(schema["properties"])


def test_shipped_examples_are_the_three_canonical_triggers() -> None:
    loaded = {item.document.name: item.document for item in load_paths([EXAMPLES])}
    assert {name: doc.type.value for name, doc in loaded.items()} == {
        "Daily Sales Report": "schedule",
        "Error Handler": "event",
        "Slack Command Handler": "webhook",
    }
    assert loaded["Error Handler"].event.condition["count_threshold"] == 5  # type: ignore[union-attr]


def test_regex_patterns_re2_cannot_run_are_definition_errors(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "trigger:\n  name: x\n  type: event\n  event:\n    pattern: 're:(a)\\1'\n  agent: {id: a}\n",
    )
    assert problems == [
        f"{tmp_path}/t.yaml:5: trigger.event.pattern: regular expression '(a)\\\\1' cannot run on RE2: "
        "invalid escape sequence: \\1 (backreferences and lookaround are not supported)"
    ]


def test_jsonpath_that_does_not_parse_is_a_definition_error(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "trigger:\n  name: x\n  type: event\n  event: {pattern: a}\n  agent:\n    id: a\n"
        "    input_mapping:\n      text: '$.body['\n",
    )
    assert len(problems) == 1
    assert "trigger.agent.input_mapping: text: '$.body[' is not a JSONPath" in problems[0]
    assert "write one like $.body.text" in problems[0]


def test_a_name_is_one_triggers_within_its_workspace() -> None:
    from processor.definitions.endpoints import name_problems

    def named(name: str, id_: str | None = None, workspace: str = "default") -> Any:
        raw = {"name": name, "type": "event", "event": {"pattern": "x"}, "agent": {"id": "a"}}
        return parse_document({**raw, "id": id_, "workspace": workspace}, "t").resolved("default")

    existing = [named("Alerts")]
    assert name_problems([(named("Alerts"), "f")], existing) == []  # the same trigger, updated
    assert name_problems([(named("Alerts", workspace="beta"), "f")], existing) == []
    taken = name_problems([(named("Alerts", id_="alerts-2"), "f")], existing)
    assert taken == [
        f"f: name: 'Alerts' is already the name of trigger {existing[0].id} in workspace "
        "'default'; names are unique within a workspace: choose another"
    ]
    batch = name_problems([(named("N", id_="n1"), "1"), (named("N", id_="n2"), "2")], [])
    assert len(batch) == 1 and batch[0].startswith("2: name: 'N' is already the name of trigger n1")
    renamed = named("Old", id_=existing[0].id)  # the one named Alerts now renamed: free
    assert name_problems([(renamed, "1"), (named("Alerts", id_="new"), "2")], existing) == []
    twins = [named("Twin", id_="t1"), named("Twin", id_="t2")]  # from before this check
    assert name_problems([(twins[1], "disable")], twins) == []  # keeps its name: writable


def test_webhook_endpoints_cannot_clash_or_use_reserved_paths() -> None:
    from processor.definitions.endpoints import endpoint_problems

    def hook(name: str, endpoint: str, method: str = "POST") -> object:
        return parse_document(
            {
                "name": name,
                "type": "webhook",
                "webhook": {"endpoint": endpoint, "method": method},
                "agent": {"id": "a"},
            },
            "t",
        ).resolved("default")

    existing = [hook("slack", "/webhooks/slack/commands")]
    assert (
        endpoint_problems([(hook("slack", "/webhooks/slack/commands"), "f.yaml")], existing) == []
    )
    clash = endpoint_problems([(hook("other", "/webhooks/slack/commands/"), "f.yaml")], existing)
    assert clash == [
        f"f.yaml: webhook.endpoint: POST /webhooks/slack/commands is already used by trigger 'slack' "
        f"(id {existing[0].id}); choose another path or method"
    ]
    assert (
        endpoint_problems([(hook("get", "/webhooks/slack/commands", "GET"), "f")], existing) == []
    )
    within_batch = endpoint_problems([(hook("a", "/x"), "1"), (hook("b", "/x"), "2")], [])
    assert len(within_batch) == 1 and within_batch[0].startswith("2: webhook.endpoint: POST /x")
    reserved = endpoint_problems([(hook("r", "/v1/triggers"), "f")], [])
    assert reserved == [
        "f: webhook.endpoint: /v1/triggers is reserved by the service; choose another path"
    ]


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("throttle: {limit: 0, period: 1m}", "throttle.limit"),
        ("throttle: {limit: 2, period: soon}", "throttle.period"),
        ("throttle: {limit: 2, period: 1m, key: '$[['}", "is not a JSONPath"),
        ("throttle: {limit: 2, period: 1m, excess: hold}", "'drop' or 'queue'"),
        ("circuit_breaker: {failures: 0}", "circuit_breaker.failures"),
        (
            "circuit_breaker: {failures: 3, cooldown: 0s}",
            "circuit_breaker.cooldown: a duration must be longer than zero",
        ),
    ],
)
def test_flow_control_errors_say_what_is_wrong(tmp_path: Path, section: str, expected: str) -> None:
    text = f"trigger:\n  name: T\n  type: event\n  event: {{pattern: x}}\n  agent: {{id: a}}\n  {section}\n"
    assert any(expected in problem for problem in problems_of(tmp_path, text)), problems_of(
        tmp_path, text
    )


def test_flow_control_settings_load() -> None:
    document = parse_document(
        {
            "name": "T",
            "type": "event",
            "event": {"pattern": "x"},
            "agent": {"id": "a"},
            "throttle": {"limit": 5, "period": "1h", "key": "$.event.data.customer"},
            "circuit_breaker": {"failures": 3},
        },
        "t.yaml",
    )
    assert document.throttle is not None and document.throttle.period.seconds == 3600
    assert document.throttle.excess.value == "drop"
    assert document.circuit_breaker is not None and document.circuit_breaker.cooldown.seconds == 300


def test_a_glob_that_looks_like_a_regex_warns_and_suggests_re() -> None:
    looks_like_regex = parse_document(
        {"name": "x", "type": "event", "event": {"pattern": "^error\\..+$"}, "agent": {"id": "a"}},
        "t",
    )
    [warning] = warnings_for(looks_like_regex)
    assert warning.startswith("event.pattern: '^error\\\\..+$' is read as a glob")
    assert "'re:^error\\\\..+$'" in warning
    plain = parse_document(
        {"name": "x", "type": "event", "event": {"pattern": "error.*"}, "agent": {"id": "a"}}, "t"
    )
    assert warnings_for(plain) == []


def schedule_doc(**schedule: object) -> Any:
    return parse_document(
        {"name": "s", "type": "schedule", "schedule": schedule, "agent": {"id": "a"}}, "t"
    )


def test_a_schedule_time_without_a_zone_is_utc_and_compares_with_one_that_has_it() -> None:
    document = schedule_doc(
        every="1h", start_date="2027-01-01T00:00:00", end_date="2027-06-01T00:00Z"
    )
    assert document.schedule is not None and document.schedule.start_date is not None
    assert document.schedule.start_date == datetime(2027, 1, 1, tzinfo=UTC)  # not local time
    with pytest.raises(DefinitionError, match="end_date must be after start_date"):
        schedule_doc(every="1h", start_date="2027-06-01T00:00:00", end_date="2027-01-01T00:00Z")


def test_a_one_shot_whose_time_has_passed_and_an_ended_schedule_warn() -> None:
    now = datetime(2026, 12, 7, 12, tzinfo=UTC)
    [past] = warnings_for(schedule_doc(at="2026-12-07T11:58:00Z"), now)
    assert past.startswith("schedule.at: 2026-12-07T11:58:00+00:00 has passed")
    assert warnings_for(schedule_doc(at="2026-12-07T11:59:30Z"), now) == []  # within grace
    [ended] = warnings_for(schedule_doc(cron="0 9 * * *", end_date="2026-12-01"), now)
    assert ended.startswith("schedule.end_date: 2026-12-01T00:00:00+00:00 has passed")
    assert warnings_for(schedule_doc(cron="0 9 * * *", end_date="2027-01-01"), now) == []


def test_input_mapping_on_a_schedule_trigger_is_refused(tmp_path: Path) -> None:
    problems = problems_of(
        tmp_path,
        "trigger:\n  name: x\n  type: schedule\n  schedule: {cron: '* * * * *'}\n"
        "  agent:\n    id: a\n    input_mapping: {text: $.body.text}\n",
    )
    assert len(problems) == 1
    assert "agent.input_mapping: a schedule fire carries no payload to map" in problems[0]


def test_durations_are_parsed_once_and_keep_their_text() -> None:
    document = parse_document(
        {
            "trigger": {
                "name": "D",
                "type": "event",
                "event": {"pattern": "x", "debounce": {"quiet": "1.5m"}},
                "agent": {"id": "a"},
                "throttle": {"limit": 1, "period": "2h"},
            }
        },
        "d.yaml",
    )
    assert document.event is not None and document.event.debounce is not None
    quiet = document.event.debounce.quiet
    assert isinstance(quiet, Duration) and quiet.seconds == 90.0 and quiet == "1.5m"
    assert document.throttle is not None and document.throttle.period.seconds == 7200.0
    stored = document_json(document)  # the text as written, not seconds
    assert stored["event"]["debounce"]["quiet"] == "1.5m" and stored["throttle"]["period"] == "2h"
    again = type(document).model_validate(stored)
    assert again.event is not None and again.event.debounce.quiet.seconds == 90.0  # type: ignore[union-attr]


def test_an_agent_input_nesting_too_deep_is_refused(tmp_path: Path) -> None:
    deep = "[" * 200 + "]" * 200
    problems = problems_of(
        tmp_path,
        f"trigger:\n  name: x\n  type: event\n  event: {{pattern: a}}\n"
        f"  agent:\n    id: a\n    input: {{deep: {deep}}}\n",
    )
    assert len(problems) == 1 and "trigger.agent.input: nests deeper than 128" in problems[0]


def test_a_run_requests_input_nesting_too_deep_is_refused() -> None:
    from pydantic import ValidationError

    from processor.http.triggers_api import RunRequest

    deep: list = []
    for _ in range(200):
        deep = [deep]
    with pytest.raises(ValidationError, match="nests deeper than 128 levels"):
        RunRequest.model_validate({"input": {"deep": deep}})
    assert RunRequest.model_validate({"input": {"a": [[1]]}}).input == {"a": [[1]]}
