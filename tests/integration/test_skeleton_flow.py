"""The walking skeleton, all real: definition → event → fire → command → runner → completed."""

from __future__ import annotations

import base64

import orjson

from processor import topics
from tests.integration.kafka import Pipeline, reading, settle

ECHO_TRIGGER = """
trigger:
  name: Deploy watcher
  type: event
  overlap: allow_all
  event:
    pattern: "deploy.*"
    source: [ci]
  agent:
    id: echo-agent
    input: {team: platform}
"""


def start_worker_and_runner(pipeline: Pipeline) -> None:
    pipeline.start("worker", name="worker")
    pipeline.start("runner", name="runner")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    pipeline.wait_ready("worker", "dispatcher restored")
    pipeline.wait_ready("runner", "runner consuming")


def test_matching_event_runs_the_agent_to_completed(pipeline: Pipeline, tmp_path) -> None:
    trigger_file = tmp_path / "deploy.yaml"
    trigger_file.write_text(ECHO_TRIGGER)
    applied = pipeline.cli("apply", "-f", str(trigger_file))
    assert "created" in applied.stdout
    trigger_id = applied.stdout.split("id=")[1].split()[0]
    start_worker_and_runner(pipeline)

    pipeline.emit(
        {
            "specversion": "1.0",
            "id": "e-1",
            "type": "deploy.finished",
            "source": "ci",
            "data": {"service": "api"},
        }
    )
    pipeline.emit({"type": "deploy.finished", "source": "elsewhere"})  # wrong source
    pipeline.emit({"type": "build.finished", "source": "ci"})  # wrong type

    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_EXECUTIONS)) as executions:
        records = executions(lambda rs: any(r["status"] == "completed" for r in rs), timeout=90)
    statuses = [r["status"] for r in records]
    assert statuses == ["pending", "running", "completed"]
    completed = records[-1]
    assert completed["trigger_id"] == trigger_id
    assert completed["agent_id"] == "echo-agent"
    assert completed["output_data"]["echo"]["team"] == "platform"
    assert completed["started_at"] and completed["completed_at"]

    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        commands = settle(runs, 2)
    assert len(commands) == 1
    command = commands[0]
    assert command["execution_id"] == completed["execution_id"]
    assert command["trigger_name"] == "Deploy watcher"
    assert command["input"]["team"] == "platform"
    assert command["input"]["event"]["data"] == {"service": "api"}
    assert command["cause"] == {
        "type": "event",
        "event_id": "e-1",
        "event_type": "deploy.finished",
        "event_source": "ci",
    }
    assert command["deadline"] > command["issued_at"]


def test_replayed_event_dispatches_once_and_bad_records_are_dead_lettered(
    pipeline: Pipeline, tmp_path
) -> None:
    trigger_file = tmp_path / "deploy.yaml"
    trigger_file.write_text(ECHO_TRIGGER)
    pipeline.cli("apply", "-f", str(trigger_file))
    start_worker_and_runner(pipeline)

    event = {"id": "same-id", "type": "deploy.started", "source": "ci"}
    pipeline.emit(event)
    pipeline.produce(topics.EVENTS, b"{not json", key=b"k1")
    pipeline.produce(topics.EVENTS, orjson.dumps({"source": "ci"}))  # no type
    pipeline.emit(event)  # the same event again (a producer retry, a replay)
    pipeline.emit({"id": "other", "type": "deploy.started", "source": "ci"})

    with reading(pipeline.bootstrap, pipeline.topic(topics.DEAD_LETTERS)) as letters:
        dead = letters(lambda ls: len(ls) >= 2, timeout=60)
    reasons = sorted(letter["error"] for letter in dead)
    assert reasons[0] == "event has no `type`"
    assert reasons[1].startswith("value is not valid JSON")
    bad_json = next(d for d in dead if d["error"].startswith("value is not valid"))
    assert base64.b64decode(bad_json["value"]) == b"{not json"
    assert base64.b64decode(bad_json["key"]) == b"k1"
    assert bad_json["topic"] == pipeline.topic(topics.EVENTS)

    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        runs(lambda cs: len(cs) >= 2, timeout=60)
        commands = settle(runs, 3)
    causes = sorted(c["cause"]["event_id"] for c in commands)
    assert causes == ["other", "same-id"]


def test_binary_mode_cloudevents_on_an_extra_input_topic_fire(pipeline: Pipeline, tmp_path) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    extra = f"{pipeline.prefix}more-events"
    trigger_file = tmp_path / "deploy.yaml"
    trigger_file.write_text(ECHO_TRIGGER)
    pipeline.cli("apply", "-f", str(trigger_file))
    pipeline.start("worker", name="worker", extra_env={"TRIGGERS_EVENT_TOPICS": f'["{extra}"]'})
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    # Created after the worker started: found at its consumer's next metadata refresh
    # (10 s; librdkafka's default of 5 minutes left it unread for 284 s).
    admin = AdminClient({"bootstrap.servers": pipeline.bootstrap})
    admin.create_topics([NewTopic(extra, num_partitions=2, replication_factor=1)])[extra].result()

    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": pipeline.bootstrap})
    producer.produce(
        extra,
        value=b'{"service": "web"}',
        headers=[
            ("ce_specversion", b"1.0"),
            ("ce_id", b"bin-1"),
            ("ce_type", b"deploy.done"),
            ("ce_source", b"ci"),
            ("content-type", b"application/json"),
        ],
    )
    assert producer.flush(10) == 0

    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        [command] = runs(lambda cs: len(cs) >= 1, timeout=60)
    assert command["cause"]["event_id"] == "bin-1"
    assert command["input"]["event"]["data"] == {"service": "web"}


def test_json_logs_are_one_object_per_line_naming_the_execution(
    pipeline: Pipeline, tmp_path
) -> None:
    (tmp_path / "deploy.yaml").write_text(ECHO_TRIGGER)
    pipeline.cli("apply", "-f", str(tmp_path / "deploy.yaml"))
    json_logs = {"TRIGGERS_LOG_FORMAT": "json"}
    pipeline.start("worker", name="worker", extra_env=json_logs)
    pipeline.start("runner", name="runner", extra_env=json_logs)
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    pipeline.wait_ready("worker", "dispatcher restored")
    pipeline.wait_ready("runner", "runner consuming")
    pipeline.emit({"id": "e-json", "type": "deploy.finished", "source": "ci"})
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_EXECUTIONS)) as executions:
        records = executions(lambda rs: any(r["status"] == "completed" for r in rs), timeout=90)
    pipeline.stop_all()
    for name in ("worker", "runner"):
        lines = [orjson.loads(line) for line in pipeline.log(name).splitlines() if line.strip()]
        assert lines and all(
            {"ts", "level", "component", "logger", "message"} <= set(line) for line in lines
        )
        # The worker's child dispatcher writes to the worker's stream, as itself.
        own = {"worker": {"worker", "dispatcher"}, "runner": {"runner"}}[name]
        components = {line["component"] for line in lines}
        assert name in components and components <= own
    [run] = [
        line
        for line in map(orjson.loads, pipeline.log("runner").splitlines())
        if line["message"].startswith("run ")
    ]
    assert run["execution_id"] == records[-1]["execution_id"]
    assert run["trigger_id"] == records[-1]["trigger_id"]
