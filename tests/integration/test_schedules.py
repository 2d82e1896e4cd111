"""Schedule triggers on the real broker: on time, disabled, failover, catch-up."""

from __future__ import annotations

import itertools
import signal
import time
from datetime import datetime
from pathlib import Path

import orjson

from processor import topics
from processor.definitions.loader import parse_document
from processor.definitions.model import document_json
from tests.integration.kafka import Pipeline, reading, settle

EVERY_TWO_SECONDS = """
trigger:
  id: tick-tock
  name: Every two seconds
  type: schedule
  overlap: allow_all  # nothing completes these runs; every fire must reach agent-runs
  schedule:
    cron: "*/2 * * * * *"
    {extra}
  agent:
    id: clock
    input: {{kind: heartbeat}}
"""


def apply(pipeline: Pipeline, tmp_path: Path, extra: str = "") -> None:
    (tmp_path / "s.yaml").write_text(EVERY_TWO_SECONDS.format(extra=extra))
    pipeline.cli("apply", "-f", str(tmp_path / "s.yaml"))


def scheduled(commands: list[dict]) -> list[float]:
    return [datetime.fromisoformat(c["input"]["scheduled_time"]).timestamp() for c in commands]


def test_a_seconds_schedule_fires_on_time_and_stops_when_disabled(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    apply(pipeline, tmp_path)
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        commands = runs(lambda cs: len(cs) >= 4, timeout=60)
        times = sorted(scheduled(commands))  # agent-runs has several partitions: sort
        assert set(b - a for a, b in itertools.pairwise(times)) == {2.0}
        for command in commands:
            late = (
                datetime.fromisoformat(command["input"]["actual_time"]).timestamp()
                - scheduled([command])[0]
            )
            assert 0 <= late < 5, command
            assert command["input"]["kind"] == "heartbeat"
            assert command["cause"] == {
                "type": "schedule",
                "scheduled_time": command["input"]["scheduled_time"],
            }
        pipeline.cli("disable", "tick-tock")
        disabled_at = time.time()
        after = settle(runs, 6)
    assert all(t < disabled_at + 1.5 for t in scheduled(after))


def test_killing_the_leader_loses_no_fire_and_duplicates_none(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    apply(pipeline, tmp_path)
    first = pipeline.start("worker", name="w1")
    pipeline.wait_ready("w1", "[^Worker]: Ready")
    second = pipeline.start("worker", name="w2")
    pipeline.wait_ready("w2", "[^Worker]: Ready")
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        runs(lambda cs: len(cs) >= 3, timeout=60)
        leader, name = (first, "w1") if "is the leader" in pipeline.log("w1") else (second, "w2")
        assert "is the leader" in pipeline.log(name)
        pipeline.stop(leader, signal.SIGKILL)
        killed_at = time.time()
        commands = runs(lambda cs: any(t > killed_at + 10 for t in scheduled(cs)), timeout=120)
        commands = settle(runs, 4)
    times = sorted(scheduled(commands))
    ids = [c["execution_id"] for c in commands]
    assert len(ids) == len(set(ids)), "a fire was dispatched twice"
    assert len(times) == len(set(times))
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert set(gaps) == {2.0}, f"fires missing around the kill: {gaps}"
    assert any(t < killed_at for t in times) and any(t > killed_at + 10 for t in times)


def test_a_worker_stopped_for_a_while_catches_up_by_the_policy(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    apply(pipeline, tmp_path, extra="grace_seconds: 3\n    catch_up: latest")
    worker = pipeline.start("worker", name="w1")
    pipeline.wait_ready("w1", "[^Worker]: Ready")
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        runs(lambda cs: len(cs) >= 2, timeout=60)
        pipeline.stop(worker)
        before = settle(runs, 1)
        last_before = max(scheduled(before))
        time.sleep(16)
        pipeline.start("worker", name="w2")
        pipeline.wait_ready("w2", "[^Worker]: Ready")
        restarted_at = time.time()
        after = runs(lambda cs: len(cs) > len(before) + 2, timeout=60)
    times = sorted(t for t in scheduled(after) if t > last_before)
    # About ten fires fell in the 16 s outage; `latest` makes only the newest missed one
    # (scheduled before the new worker was even ready), then continues on time.
    assert times[0] - last_before >= 10, (last_before, times)
    assert times[0] <= restarted_at, (restarted_at, times)
    assert [b - a for a, b in itertools.pairwise(times)] == [2.0] * (len(times) - 1)


def test_a_backfill_fires_each_missed_time_once_through_the_dispatcher(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    import httpx

    from tests.integration.kafka import start_serve

    (tmp_path / "b.yaml").write_text(
        "trigger: {id: minutely, name: Minutely, type: schedule, overlap: allow_all,"
        " schedule: {cron: '0 0 1 1 *'}, agent: {id: clock}}\n"  # once a year: no live fires
        "---\n"
        "trigger: {id: on-event, name: On event, type: event, event: {pattern: a.b},"
        " agent: {id: clock}}\n"
    )
    pipeline.cli("apply", "-f", str(tmp_path / "b.yaml"))
    keys = '{"k-ops": "default", "k-beta": "beta"}'
    base = start_serve(pipeline, extra_env={"TRIGGERS_API_KEYS": keys})
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    ops = {"Authorization": "Bearer k-ops"}
    url = f"{base}/v1/triggers/minutely/backfill"
    years = {"from": "2021-06-01T00:00:00Z", "to": "2026-06-01T00:00:00Z"}

    dry = httpx.post(url, json={**years, "dry_run": True}, headers=ops, timeout=30)
    assert dry.status_code == 202, dry.text
    assert [f["scheduled_time"][:10] for f in dry.json()["fires"]] == [
        "2022-01-01",
        "2023-01-01",
        "2024-01-01",
        "2025-01-01",
        "2026-01-01",
    ]
    assert dry.json()["started"] == 0
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        done = httpx.post(url, json=years, headers=ops, timeout=30)
        assert done.status_code == 202 and done.json()["started"] == 5
        assert [f["execution_id"] for f in done.json()["fires"]] == [
            f["execution_id"] for f in dry.json()["fires"]
        ]
        runs(lambda cs: len(cs) >= 5, timeout=60)
        # The CLI over a wider range: the five are known, the one before them is new.
        cli = pipeline.cli("backfill", "Minutely", "--from", "2020-06-01", "--to", "2026-06-01")
        assert cli.stdout.count("ran already") == 5 and "6 scheduled times, 1 started" in cli.stdout
        runs(lambda cs: len(cs) >= 6, timeout=60)
        commands = settle(runs, 3)  # everything read, a little after: nothing doubled
    assert sorted(c["input"]["scheduled_time"][:4] for c in commands) == [
        "2021", "2022", "2023", "2024", "2025", "2026"
    ]  # fmt: skip
    assert all(c["cause"]["backfill"] and c["cause"]["type"] == "schedule" for c in commands)
    deadline = time.monotonic() + 30
    while True:  # once the service's view has them, a repeat starts nothing
        again = httpx.post(url, json=years, headers=ops, timeout=30).json()
        if again["started"] == 0:
            break
        assert time.monotonic() < deadline, again
        time.sleep(1)
    assert all(f["known"] for f in again["fires"])

    centuries = {"from": "0900-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    over = httpx.post(url, json=centuries, headers=ops, timeout=30)
    assert over.status_code == 422 and "at most 1000" in over.text
    decade = {"from": "2000-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"}
    not_a_schedule = httpx.post(
        f"{base}/v1/triggers/on-event/backfill", json=decade, headers=ops, timeout=30
    )
    assert not_a_schedule.status_code == 422 and "only schedule triggers" in not_a_schedule.text
    assert (
        httpx.post(url, json=years, headers={"Authorization": "Bearer k-beta"}).status_code == 404
    )
    refused = pipeline.cli(
        "backfill", "On event", "--from", "2020-01-01", "--to", "2021-01-01", check=False
    )
    assert refused.returncode == 1 and "only schedule triggers" in refused.stderr


def test_a_stored_schedule_naming_30_february_leaves_the_other_schedules_firing(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """A definition stored before validation refused such a cron (or written to the topic
    by hand): the worker ignores it with the reason, the other schedules fire (every tick
    was dead-lettered while it existed: no schedule fired), and `status` names it."""
    stored = parse_document(
        {
            "id": "feb-30",
            "name": "Feb 30",
            "type": "schedule",
            "agent": {"id": "never"},
            "schedule": {"cron": "0 0 28 2 *"},
        },
        "test",
    )
    value = document_json(stored)
    value["schedule"]["cron"] = "0 0 30 2 *"
    pipeline.produce(topics.TRIGGER_DEFINITIONS, orjson.dumps(value), key=b"feb-30")
    apply(pipeline, tmp_path)
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        commands = runs(lambda cs: len(cs) >= 2, timeout=60)
    assert {c["trigger_id"] for c in commands} == {"tick-tock"}
    assert "ignoring invalid definition feb-30" in pipeline.log("worker")
    assert "failed to find next date" not in pipeline.log("worker")
    status = pipeline.cli("status", "feb-30", check=False)
    assert status.returncode == 1
    assert "names no date that exists (such as 30 February" in status.stderr, status.stderr
