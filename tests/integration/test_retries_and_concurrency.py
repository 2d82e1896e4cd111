"""Retries with backoff, `on_failure: emit` and per-key concurrency on the real broker."""

from __future__ import annotations

import itertools
import signal
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from processor import topics
from tests.integration.kafka import Pipeline, reading, settle, start_serve

RETRYING = """
trigger:
  id: flaky
  workspace: alpha
  name: Flaky job
  type: event
  event: {pattern: job.flaky}
  retry: {attempts: 3, initial: 1s, jitter: false}
  agent: {id: worker-agent, input: {runner: {action: echo, fail_attempts: 1}}}
---
trigger:
  id: doomed
  workspace: alpha
  name: Doomed job
  type: event
  event: {pattern: job.doomed}
  retry: {attempts: 3, backoff: exponential, initial: 1s, max: 2s, jitter: false}
  on_failure: emit
  agent: {id: worker-agent, input: {runner: {action: fail, error: database is down}}}
---
trigger:
  id: on-failure
  workspace: alpha
  name: Failure handler
  type: event
  event:
    pattern: trigger.execution.failed
    condition: {trigger_id: doomed}
  agent:
    id: pager-agent
    input_mapping: {failed: $.data.execution_id, error: $.data.error, attempts: $.data.attempts}
"""


def when(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def test_failed_attempts_retry_with_backoff_then_fail_for_good_and_announce_it(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    (tmp_path / "t.yaml").write_text(RETRYING)
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    base = start_serve(pipeline)
    pipeline.start_worker_and_runner()
    pipeline.emit({"type": "job.flaky", "source": "api", "id": "f-1"})
    pipeline.emit({"type": "job.doomed", "source": "api", "id": "d-1"})

    def finals(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {r["trigger_id"]: r for r in records}

    def done(records: list[dict[str, Any]]) -> bool:
        latest = finals(records)
        return (
            latest.get("flaky", {}).get("status") == "completed"
            and latest.get("on-failure", {}).get("status") == "completed"
        )

    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_EXECUTIONS)) as executions:
        records = executions(done, timeout=90)
    latest = finals(records)
    # One execution each, attempts counted on it; the flaky one succeeded on its second.
    assert latest["flaky"]["attempt"] == 2 and "retry_at" not in latest["flaky"]
    assert latest["doomed"]["status"] == "failed" and latest["doomed"]["attempt"] == 3
    assert latest["doomed"]["error_message"] == "database is down"
    waits = [r for r in records if r["trigger_id"] == "doomed" and "retry_at" in r]
    assert [(r["status"], r["attempt"]) for r in waits] == [("pending", 2), ("pending", 3)]
    assert "attempt 1 failed: database is down" in waits[0]["reason"]

    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        commands = settle(runs, 3)
    by_trigger = defaultdict(list)
    for command in commands:
        by_trigger[command["trigger_id"]].append(command)
    assert [c["attempt"] for c in by_trigger["flaky"]] == [1, 2]
    assert [c["attempt"] for c in by_trigger["doomed"]] == [1, 2, 3]
    assert len({c["execution_id"] for c in by_trigger["doomed"]}) == 1
    # The backoff: 1 s, then 2 s (exponential, capped by max), from when the failure was
    # handled. The dispatcher looks for due retries once a second, so each retry's command
    # is issued at its retry_at or somewhat after (never before; a loaded machine is late).
    backoffs = [when(r["retry_at"]) - when(r["updated_at"]) for r in waits]
    assert backoffs == [pytest.approx(1.0, abs=1e-3), pytest.approx(2.0, abs=1e-3)], backoffs
    retried = [when(c["issued_at"]) for c in by_trigger["doomed"][1:]]
    for wait, issued in zip(waits, retried, strict=True):
        assert when(wait["retry_at"]) <= issued < when(wait["retry_at"]) + 10, (wait, issued)

    with reading(pipeline.bootstrap, pipeline.topic(topics.EVENTS)) as events:
        announced = [e for e in settle(events, 1) if e.get("type") == "trigger.execution.failed"]
    [event] = announced  # the flaky one recovered, so only the doomed one is announced
    assert event["specversion"] == "1.0" and event["source"] == "/triggers/doomed"
    assert event["data"]["execution_id"] == latest["doomed"]["execution_id"]
    assert event["data"]["attempts"] == 3 and event["data"]["error"] == "database is down"
    handled = latest["on-failure"]
    assert handled["cause"]["event_type"] == "trigger.execution.failed"
    assert handled["input_data"]["failed"] == latest["doomed"]["execution_id"]
    assert handled["input_data"]["attempts"] == 3

    # The API and the console show the attempts; another workspace sees nothing.
    doomed = latest["doomed"]["execution_id"]
    path = f"/v1/triggers/doomed/executions/{doomed}"
    deadline = time.monotonic() + 30
    while True:  # the service reads the executions topic as it starts (503 until then)
        answer = httpx.get(base + path, headers={"Authorization": "Bearer k-alpha"})
        if answer.status_code != 503 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert answer.status_code == 200 and answer.json()["attempt"] == 3
    assert httpx.get(base + path, headers={"Authorization": "Bearer k-beta"}).status_code == 404
    with httpx.Client(base_url=base, follow_redirects=True) as console:
        console.post("/ui/login", data={"key": "k-alpha"}).raise_for_status()
        page = console.get(f"/ui/triggers/doomed/executions/{doomed}").text
    assert "attempt 3 of 3" in page and "database is down" in page


def test_a_waiting_retry_is_neither_lost_nor_doubled_when_the_worker_is_killed(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    (tmp_path / "t.yaml").write_text("""
trigger:
  id: slow-retry
  name: Slow retry
  type: event
  event: {pattern: job.retry}
  retry: {attempts: 2, initial: 12s, jitter: false}
  agent: {id: worker-agent}
""")
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    worker = pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    pipeline.emit({"type": "job.retry", "source": "api", "id": "r-1"})
    with (
        reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs,
        reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_EXECUTIONS)) as executions,
    ):
        [first] = runs(lambda cs: len(cs) >= 1, timeout=60)
        assert first["attempt"] == 1
        # The test is the runtime: attempt 1 fails.
        pipeline.produce(
            topics.AGENT_RUN_RESULTS,
            orjson.dumps(
                {
                    "execution_id": first["execution_id"],
                    "trigger_id": "slow-retry",
                    "status": "failed",
                    "error": "first try",
                    "attempt": 1,
                }
            ),
            key=first["execution_id"].encode(),
        )
        executions(lambda rs: any(r.get("retry_at") for r in rs), timeout=60)
        pipeline.stop(worker, signal.SIGKILL)  # the retry waits in the committed state only
        pipeline.start("worker", name="worker-2")
        pipeline.wait_ready("worker-2", "[^Worker]: Ready")
        commands = runs(lambda cs: len(cs) >= 2, timeout=90)
        commands = settle(runs, 8)
    assert [(c["execution_id"], c["attempt"]) for c in commands] == [
        (first["execution_id"], 1),
        (first["execution_id"], 2),
    ]
    assert when(commands[1]["issued_at"]) - when(first["issued_at"]) >= 11.5


CONCURRENCY = """
trigger:
  id: per-customer
  name: Per customer
  type: event
  event: {pattern: order.placed}
  max_concurrent: 10
  overlap: buffer_all
  concurrency: {limit: 1, key: $.event.data.customer}
  agent: {id: worker-agent, input: {runner: {action: sleep, seconds: 1.5}}}
"""


def test_one_run_per_customer_at_a_time_while_other_customers_run_alongside(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    (tmp_path / "t.yaml").write_text(CONCURRENCY)
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    pipeline.start_worker_and_runner()
    for n, customer in enumerate(["acme", "beta", "acme", "beta", "acme", "beta"]):
        pipeline.emit(
            {
                "type": "order.placed",
                "source": "shop",
                "id": f"o-{n}",
                "data": {"customer": customer},
            }
        )

    def finals(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
        return {r["execution_id"]: r for r in records}

    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_EXECUTIONS)) as executions:
        records = executions(
            lambda rs: sum(r["status"] == "completed" for r in finals(rs).values()) == 6,
            timeout=120,
        )
    spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for record in finals(records).values():
        assert record["concurrency_key"] == record["input_data"]["event"]["data"]["customer"]
        spans[record["concurrency_key"]].append(
            (when(record["started_at"]), when(record["completed_at"]))
        )
    assert sorted(spans) == ["acme", "beta"] and all(len(s) == 3 for s in spans.values())
    for customer, runs in spans.items():  # never two runs of one customer at once
        ordered = sorted(runs)
        assert all(a[1] <= b[0] for a, b in itertools.pairwise(ordered)), (customer, ordered)
    # ... while the other customer's runs went on at the same time
    assert any(a[0] < b[1] and b[0] < a[1] for a in spans["acme"] for b in spans["beta"]), spans
    waited = [r for r in records if r["status"] == "pending" and "issued_at" not in r]
    assert waited and all("concurrency.limit (1)" in r["reason"] for r in waited)


def test_a_retry_or_concurrency_policy_that_cannot_parse_names_the_file_and_line(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("""trigger:
  name: Bad retry
  type: event
  event: {pattern: x}
  retry:
    attempts: 3
    initial: soon
  concurrency: {limit: 0, key: "$.["}
  agent: {id: a}
""")
    answer = pipeline.cli("validate", "-f", str(bad), check=False)
    assert answer.returncode != 0
    told = answer.stdout + answer.stderr
    assert f"{bad}:7" in told and "not a duration" in told, told
    assert "concurrency" in told and "not a JSONPath" in told, told
