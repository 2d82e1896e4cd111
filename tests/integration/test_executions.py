"""Execution life on the real broker: overlap, timeout, cancel at the runtime."""

from __future__ import annotations

import itertools
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import orjson
import yaml
from confluent_kafka import Producer

from processor import topics
from tests.integration.kafka import Pipeline, incompressible, reading, start_serve

ALPHA = {"Authorization": "Bearer k-alpha"}
BETA = {"Authorization": "Bearer k-beta"}

TRIGGER = """
trigger:
  id: slow-job
  name: Slow job
  type: event
  event: {pattern: job.requested}
  max_concurrent: 1
  overlap: buffer_one
  timeout_seconds: 4
  agent:
    id: worker-agent
    input: {runner: {action: hang}}
"""


def test_timeout_cancels_at_the_runtime_and_the_buffered_fire_runs(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    (tmp_path / "t.yaml").write_text(TRIGGER)
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    pipeline.start_worker_and_runner()
    for job in ("j1", "j2", "j3"):  # one key: one partition, so they arrive in this order
        pipeline.produce(
            topics.EVENTS,
            orjson.dumps({"type": "job.requested", "source": "api", "id": job}),
            key=b"jobs",
        )

    def final(records: list[dict]) -> dict[str, str]:
        latest: dict[str, str] = {}
        for r in records:
            latest[r["cause"]["event_id"]] = r["status"]
        return latest

    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_EXECUTIONS)) as executions:
        records = executions(lambda rs: final(rs).get("j3") == "timed_out", timeout=90)
    latest = final(records)
    # j1 ran (hung) and timed out; j2 waited, then was replaced by j3 (buffer_one);
    # j3 ran once j1's slot was freed, and timed out in turn.
    assert latest == {"j1": "timed_out", "j2": "skipped", "j3": "timed_out"}
    j1 = [r for r in records if r["cause"]["event_id"] == "j1"]
    assert [r["status"] for r in j1] == ["pending", "running", "timed_out"]
    assert "timeout_seconds" in j1[-1]["reason"]
    j2 = [r for r in records if r["cause"]["event_id"] == "j2"][-1]
    assert "replaced by newer fire" in j2["reason"]

    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUN_CONTROL)) as controls:
        cancels = controls(lambda cs: len(cs) >= 2, timeout=30)
    assert {c["action"] for c in cancels} == {"cancel"}
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUN_RESULTS)) as results:
        reported = results(lambda rs: sum(r["status"] == "cancelled" for r in rs) >= 2, timeout=30)
    assert (
        sum(r["status"] == "cancelled" for r in reported) == 2
    )  # the runner honoured both cancels

    listing = pipeline.cli("executions", "slow-job").stdout.splitlines()
    assert [line.split()[1] for line in listing] == ["timed_out", "skipped", "timed_out"]
    assert "timed_out" not in pipeline.cli("executions", "slow-job", "--status", "skipped").stdout


def test_history_api_is_newest_first_filtered_paginated_and_workspace_scoped(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    (tmp_path / "t.yaml").write_text(
        "trigger: {id: echo, name: Echo, workspace: alpha, type: event, overlap: allow_all,"
        " event: {pattern: ping}, agent: {id: e}}\n"
    )
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    base = start_serve(pipeline)
    pipeline.start("worker", name="worker")
    pipeline.start("runner", name="runner")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    for i in range(3):  # one key, one partition: Kafka keeps their order
        ping = {"type": "ping", "source": "t", "id": f"p{i}", "time": f"2026-11-25T10:00:0{i}Z"}
        pipeline.produce(topics.EVENTS, orjson.dumps(ping), key=b"pings")
    deadline = time.monotonic() + 60
    while True:
        page = httpx.get(
            f"{base}/v1/triggers/echo/executions", params={"status": "completed"}, headers=ALPHA
        ).json()
        if len(page["items"]) == 3:
            break
        assert time.monotonic() < deadline, page
        time.sleep(0.5)
    assert [r["cause"]["event_id"] for r in page["items"]] == ["p2", "p1", "p0"]
    first = httpx.get(
        f"{base}/v1/triggers/echo/executions", params={"limit": 2}, headers=ALPHA
    ).json()
    rest = httpx.get(
        f"{base}/v1/triggers/echo/executions",
        params={"limit": 2, "cursor": first["next_cursor"]},
        headers=ALPHA,
    ).json()
    assert [r["cause"]["event_id"] for r in first["items"] + rest["items"]] == ["p2", "p1", "p0"]
    assert rest["next_cursor"] is None
    one = page["items"][0]
    got = httpx.get(f"{base}/v1/triggers/echo/executions/{one['execution_id']}", headers=ALPHA)
    assert got.status_code == 200 and got.json()["output_data"]["echo"]["event"]["id"] == "p2"
    assert httpx.get(f"{base}/v1/triggers/echo/executions", headers=BETA).status_code == 404
    assert (
        httpx.get(
            f"{base}/v1/triggers/echo/executions/{one['execution_id']}", headers=BETA
        ).status_code
        == 404
    )
    running = httpx.get(
        f"{base}/v1/triggers/echo/executions", params={"status": "running"}, headers=ALPHA
    )
    assert running.json()["items"] == []
    # Every trigger's executions of the workspace at once (the console's Executions page).
    everything = f"{base}/v1/executions"
    listed = httpx.get(everything, params={"limit": 2}, headers=ALPHA).json()
    more = httpx.get(
        everything, params={"limit": 2, "cursor": listed["next_cursor"]}, headers=ALPHA
    ).json()
    assert [r["cause"]["event_id"] for r in listed["items"] + more["items"]] == ["p2", "p1", "p0"]
    assert more["next_cursor"] is None
    assert httpx.get(everything, headers=BETA).json()["items"] == []
    assert httpx.get(everything, params={"status": "running"}, headers=ALPHA).json()["items"] == []
    one_trigger = httpx.get(everything, params={"trigger_id": "nope"}, headers=ALPHA).json()
    assert one_trigger["items"] == []
    assert httpx.get(everything, params={"cursor": "x"}, headers=ALPHA).status_code == 400
    # A deleted trigger's executions stay readable in its workspace, as on the CLI.
    assert httpx.delete(f"{base}/v1/triggers/echo", headers=ALPHA).status_code == 204
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/v1/triggers/echo", headers=ALPHA).status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    gone = httpx.get(f"{base}/v1/triggers/echo/executions", headers=ALPHA)
    assert [r["cause"]["event_id"] for r in gone.json()["items"]] == ["p2", "p1", "p0"], gone.text
    url = f"{base}/v1/triggers/echo/executions/{one['execution_id']}"
    assert httpx.get(url, headers=ALPHA).json()["execution_id"] == one["execution_id"]
    assert httpx.get(url, headers=BETA).status_code == 404
    assert httpx.get(f"{base}/v1/triggers/echo/executions", headers=BETA).status_code == 404
    assert httpx.get(f"{base}/v1/triggers/echo/status", headers=ALPHA).status_code == 404
    # The id taken again in another workspace: each workspace reads its own runs only.
    again = {"name": "Echo", "type": "event", "event": {"pattern": "pong"}, "agent": {"id": "e"}}
    put = httpx.put(f"{base}/v1/triggers/echo", json=again, headers=BETA)
    assert put.status_code == 201, put.text
    deadline = time.monotonic() + 30
    while httpx.get(f"{base}/v1/triggers/echo", headers=BETA).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert httpx.get(f"{base}/v1/triggers/echo/executions", headers=BETA).json()["items"] == []
    assert httpx.get(url, headers=BETA).status_code == 404
    status = httpx.get(f"{base}/v1/triggers/echo/status", headers=BETA).json()
    assert status["last_fire_at"] is None and status["fires_last_hour"] == 0, status
    assert len(httpx.get(f"{base}/v1/triggers/echo/executions", headers=ALPHA).json()["items"]) == 3


def test_cancel_over_the_api_stops_a_running_execution_and_finished_ones_answer_409(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    (tmp_path / "t.yaml").write_text(
        "trigger: {id: hang, name: Hang, workspace: alpha, type: event, event: {pattern: stuck},"
        " agent: {id: h, input: {runner: {action: hang}}}}\n"
    )
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    base = start_serve(pipeline)
    pipeline.start("worker", name="worker")
    pipeline.start("runner", name="runner")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    pipeline.emit({"type": "stuck", "source": "t", "id": "s1"})

    def execution(status: str) -> dict:
        deadline = time.monotonic() + 60
        while True:
            items = httpx.get(
                f"{base}/v1/triggers/hang/executions", params={"status": status}, headers=ALPHA
            ).json()["items"]
            if items:
                return items[0]
            assert time.monotonic() < deadline, f"no {status} execution"
            time.sleep(0.3)

    running = execution("running")
    url = f"{base}/v1/triggers/hang/executions/{running['execution_id']}/cancel"
    assert httpx.post(url, headers=BETA).status_code == 404
    answer = httpx.post(url, headers=ALPHA)
    assert answer.status_code == 202 and answer.json() == {
        "execution_id": running["execution_id"],
        "cancel": "requested",
    }
    cancelled = execution("cancelled")
    assert cancelled["execution_id"] == running["execution_id"]
    assert httpx.post(url, headers=ALPHA).status_code == 409


FLOW = """
trigger:
  id: per-customer
  name: Per customer
  workspace: alpha
  type: event
  event: {pattern: order.placed}
  overlap: allow_all
  throttle: {limit: 2, period: 1h, key: $.event.data.customer}
  agent: {id: echo}
---
trigger:
  id: queued
  name: Queued
  workspace: alpha
  type: event
  event: {pattern: report.asked}
  overlap: allow_all
  throttle: {limit: 1, period: 3s, excess: queue}
  agent: {id: echo}
---
trigger:
  id: flaky
  name: Flaky
  workspace: alpha
  type: event
  event: {pattern: flaky.job}
  overlap: buffer_all
  circuit_breaker: {failures: 2, cooldown: 1h}
  agent:
    id: failing
    input: {runner: {action: fail, error: upstream is down}}
"""


def test_throttle_drops_or_queues_and_the_breaker_pauses_after_failures(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    (tmp_path / "t.yaml").write_text(FLOW)
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    base = start_serve(pipeline)
    pipeline.start_worker_and_runner()
    for n, customer in enumerate(["acme", "acme", "acme", "globex"]):
        order = {
            "type": "order.placed",
            "source": "shop",
            "id": f"o{n}",
            "data": {"customer": customer},
        }
        pipeline.produce(topics.EVENTS, orjson.dumps(order), key=b"orders")
    for n in range(3):
        ask = {"type": "report.asked", "source": "ui", "id": f"r{n}"}
        pipeline.produce(topics.EVENTS, orjson.dumps(ask), key=b"reports")
    for n in range(4):
        job = {"type": "flaky.job", "source": "cron", "id": f"j{n}"}
        pipeline.produce(topics.EVENTS, orjson.dumps(job), key=b"jobs")

    def latest(records: list[dict]) -> dict[str, dict]:
        return {r["cause"]["event_id"]: r for r in records}

    def done(records: list[dict]) -> bool:
        final = latest(records)
        wanted = (
            [f"o{n}" for n in range(4)] + [f"r{n}" for n in range(3)] + [f"j{n}" for n in range(4)]
        )
        return all(e in final and final[e]["status"] in FINISHED for e in wanted)

    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_EXECUTIONS)) as executions:
        records = executions(done, timeout=120)
    final = latest(records)
    status = {e: r["status"] for e, r in final.items()}
    # at most 2 runs an hour per customer: the third acme order is dropped, globex runs
    assert [status[f"o{n}"] for n in range(4)] == ["completed", "completed", "skipped", "completed"]
    assert "throttled: 2 runs per 1h already started for key 'acme'" in final["o2"]["reason"]
    # one run per 3 s, the excess queued: all three ran, at least 3 s apart
    assert [status[f"r{n}"] for n in range(3)] == ["completed"] * 3
    issued = sorted(datetime.fromisoformat(final[f"r{n}"]["issued_at"]) for n in range(3))
    assert all((b - a).total_seconds() >= 2.9 for a, b in itertools.pairwise(issued))
    # two failures in a row open the breaker: the waiting jobs are skipped with the reason
    assert [status[f"j{n}"] for n in range(4)] == ["failed", "failed", "skipped", "skipped"]
    assert "circuit breaker open after 2 consecutive" in final["j3"]["reason"]

    def trigger_status(trigger_id: str) -> dict:
        return httpx.get(f"{base}/v1/triggers/{trigger_id}/status", headers=ALPHA).json()

    deadline = time.monotonic() + 30
    while trigger_status("flaky")["state"] != "paused":
        assert time.monotonic() < deadline, trigger_status("flaky")
        time.sleep(0.3)
    paused = trigger_status("flaky")
    assert paused["consecutive_failures"] == 2 and "paused until" in paused["reason"]
    assert trigger_status("per-customer")["state"] == "enabled"
    assert trigger_status("per-customer")["runs_last_hour"] == 3
    assert httpx.get(f"{base}/v1/triggers/flaky/status", headers=BETA).status_code == 404
    listed = httpx.get(f"{base}/v1/triggers", params={"state": "paused"}, headers=ALPHA).json()
    assert [t["id"] for t in listed["items"]] == ["flaky"]  # what an operator asks first
    shown = pipeline.cli("status", "flaky").stdout
    assert "state: paused" in shown and "consecutive_failures: 2" in shown


FINISHED = {"completed", "failed", "skipped", "cancelled", "timed_out"}


def test_results_without_trigger_id_are_joined_unknown_ones_dead_lettered_and_follow_tails(
    pipeline: Pipeline,
) -> None:
    pipeline.start_worker_with(
        "trigger: {id: joined, name: Joined, type: event, overlap: allow_all,"
        " event: {pattern: join.me}, agent: {id: external}}\n"
    )
    pipeline.start("executions", "joined", "--follow", name="follow")
    # What happens from here on is a change to follow, not part of the listing.
    pipeline.wait_ready("follow", "following changes")
    pipeline.emit({"type": "join.me", "source": "t", "id": "only"})
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_EXECUTIONS)) as executions:
        [pending] = executions(lambda rs: len(rs) >= 1, timeout=60)
    execution_id = pending["execution_id"]
    # a runtime that does not echo trigger_id: the dispatcher finds it in trigger-executions
    for result in (
        {"execution_id": execution_id, "status": "completed", "output": {"answer": 42}},
        {"execution_id": "never-issued", "status": "completed"},
    ):
        pipeline.produce(
            topics.AGENT_RUN_RESULTS, orjson.dumps(result), key=result["execution_id"].encode()
        )
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_EXECUTIONS)) as executions:
        records = executions(lambda rs: bool(rs) and rs[-1]["status"] == "completed", timeout=60)
    assert records[-1]["output_data"] == {"answer": 42}
    with reading(pipeline.bootstrap, pipeline.topic(topics.DEAD_LETTERS)) as letters:
        found = letters(lambda ls: len(ls) >= 1, timeout=60)
    errors = [letter["error"] for letter in found]
    assert any("unknown execution never-issued" in e for e in errors), errors
    deadline = time.monotonic() + 30
    while f"completed  {execution_id}" not in pipeline.log("follow"):
        assert time.monotonic() < deadline, pipeline.log("follow")
        time.sleep(0.3)
    assert f"pending    {execution_id}" in pipeline.log("follow")
    # A deleted trigger's executions stay on the topic, and `executions` still shows them.
    pipeline.cli("delete", "joined")
    for ref in ("Joined", "joined"):
        listed = pipeline.cli("executions", ref).stdout
        assert f"completed  {execution_id}  Joined" in listed, listed
    unknown = pipeline.cli("executions", "Nobody", check=False)
    assert unknown.returncode == 1 and "nor executions of one" in unknown.stderr


def test_rerun_one_execution_or_every_failed_one_with_the_same_input(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    (tmp_path / "t.yaml").write_text(
        "trigger: {id: flaky, name: Flaky, workspace: alpha, type: event,"
        " event: {pattern: job.flaky}, overlap: allow_all,"
        " agent: {id: f, input: {runner: {action: fail, error: boom}, region: eu}}}\n"
    )
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    base = start_serve(pipeline)
    pipeline.start("worker", name="worker")
    pipeline.start("runner", name="runner")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    pipeline.emit({"type": "job.flaky", "source": "t", "id": "f1", "data": {"n": 1}})
    pipeline.emit({"type": "job.flaky", "source": "t", "id": "f2", "data": {"n": 2}})
    url = f"{base}/v1/triggers/flaky/executions"

    def failed(count: int) -> list[dict]:
        deadline = time.monotonic() + 60
        while True:
            items = httpx.get(url, params={"status": "failed"}, headers=ALPHA).json()["items"]
            if len(items) >= count:
                return items
            assert time.monotonic() < deadline, f"{len(items)} failed executions, not {count}"
            time.sleep(0.3)

    first, second = sorted(failed(2), key=lambda r: r["triggered_at"])
    # One, over the API: a new execution with the same input, its cause naming the first.
    once = {**ALPHA, "Idempotency-Key": "retry-1"}
    answer = httpx.post(f"{url}/{first['execution_id']}/rerun", headers=once)
    assert answer.status_code == 202, answer.text
    rerun_id = answer.json()["execution_id"]
    assert answer.json()["reruns"] == first["execution_id"] and rerun_id != first["execution_id"]
    again = httpx.post(f"{url}/{first['execution_id']}/rerun", headers=once)
    assert again.json()["execution_id"] == rerun_id  # a retried request: no second run
    assert httpx.post(f"{url}/{first['execution_id']}/rerun", headers=BETA).status_code == 404
    assert httpx.post(f"{url}/nope/rerun", headers=ALPHA).status_code == 404
    records = failed(3)
    [rerun] = [r for r in records if r["execution_id"] == rerun_id]
    assert rerun["cause"]["type"] == "rerun"
    assert rerun["cause"]["execution_id"] == first["execution_id"]
    assert rerun["input_data"] == first["input_data"]  # the event's data included

    # Every failed one in a range, from the CLI: a dry run first, then the run.
    since = first["triggered_at"]
    until = datetime.fromisoformat(second["triggered_at"]).timestamp() + 0.001
    until_text = datetime.fromtimestamp(until).astimezone().isoformat()
    bulk = {"status": "failed", "since": since, "until": until_text}
    listed = httpx.post(f"{url}/rerun", json={**bulk, "dry_run": True}, headers=ALPHA).json()
    assert [r["reruns"] for r in listed["reruns"]] == [
        first["execution_id"],
        second["execution_id"],
    ]
    started = httpx.post(f"{url}/rerun", json=bulk, headers=ALPHA)
    assert started.status_code == 202
    assert started.json()["reruns"] == listed["reruns"]  # the ids the dry run showed
    assert httpx.post(f"{url}/rerun", json=bulk, headers=ALPHA).json() == started.json()
    records = failed(5)
    assert len(records) == 5  # two originals, one single re-run, two from the bulk: no more
    cli = pipeline.cli("rerun", second["execution_id"])
    assert "re-running" in cli.stdout and second["execution_id"] in cli.stdout
    dry = pipeline.cli("rerun", "--trigger", "flaky", "--status", "timed_out", "--dry-run")
    assert "nothing to re-run" in dry.stdout
    refused = pipeline.cli("rerun", "no-such-execution", check=False)
    assert refused.returncode == 1 and "no execution no-such-execution" in refused.stderr


def test_status_counts_a_run_of_failures_in_finishing_order_across_partitions(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """trigger-executions is keyed by execution: these two runs' records lie on
    partitions 0 and 2, and a reader of all of them may meet the second failure first
    (the code before counted in reading order and gave the first one's time)."""
    (tmp_path / "t.yaml").write_text(
        "trigger: {id: breaker-order, name: Breaker order, type: event, overlap: allow_all,"
        " event: {pattern: never.sent}, circuit_breaker: {failures: 2, cooldown: 1h},"
        " agent: {id: failing, input: {runner: {action: fail}}}}\n"
    )
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    pipeline.start_worker_and_runner()
    finished = {}
    for key in ("a1", "a2"):  # one after the other
        execution_id = pipeline.cli("run", "breaker-order", "--idempotency-key", key).stdout
        execution_id = execution_id.split("execution_id=")[1].strip()
        with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_EXECUTIONS)) as executions:
            records = executions(
                lambda rs, e=execution_id: any(
                    r["execution_id"] == e and r["status"] == "failed" for r in rs
                ),
                timeout=60,
            )
        [failed] = [
            r for r in records if r["execution_id"] == execution_id and r["status"] == "failed"
        ]
        finished[key] = datetime.fromisoformat(failed["completed_at"])
    assert finished["a1"] < finished["a2"]
    shown = yaml.safe_load(pipeline.cli("status", "breaker-order").stdout)
    assert shown["state"] == "paused" and shown["consecutive_failures"] == 2
    paused_until = datetime.fromisoformat(shown["paused_until"].replace("Z", "+00:00"))
    assert paused_until == finished["a2"] + timedelta(hours=1), (shown, finished)


def test_a_result_no_record_could_keep_finishes_its_execution_and_the_dispatcher_goes_on(
    pipeline: Pipeline,
) -> None:
    """Outputs over TRIGGERS_RESULT_OUTPUT_MAX_BYTES or nesting too deep, and errors of
    megabytes, once made records the broker refused: the dispatcher's transaction failed
    at every try and no execution of any trigger moved again."""
    pipeline.start_worker_with(
        "trigger: {id: chatty, name: Chatty, workspace: alpha, type: event, overlap: allow_all,"
        " max_concurrent: 10, event: {pattern: talk.much}, agent: {id: external}}\n",
        extra_env={"TRIGGERS_RESULT_OUTPUT_MAX_BYTES": "100000"},
    )
    for n in range(4):
        pipeline.emit({"type": "talk.much", "source": "t", "id": f"e{n}"})
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_EXECUTIONS)) as executions:
        pending = executions(lambda rs: len(rs) >= 4, timeout=60)
    big, deep, wordy, fine = sorted(r["execution_id"] for r in pending)
    noise = incompressible(975_000)
    results = [
        {"execution_id": big, "status": "completed", "output": {"report": noise}},
        {"execution_id": deep, "status": "completed", "output": [[[0]]]},
        {"execution_id": wordy, "status": "failed", "error": noise},
        {"execution_id": fine, "status": "completed", "output": {"ok": True}},
    ]
    for result in results:
        value = orjson.dumps(result)
        if result["execution_id"] == deep:
            value = value.replace(b"[[[0]]]", b"[" * 300 + b"0" + b"]" * 300)
        pipeline.produce(topics.AGENT_RUN_RESULTS, value, key=result["execution_id"].encode())
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_EXECUTIONS)) as executions:
        changes = executions(lambda rs: sum(r["status"] in FINISHED for r in rs) >= 4, timeout=90)
    final = {r["execution_id"]: r for r in changes if r["status"] in FINISHED}
    assert final[big]["status"] == "completed" and final[big].get("output_data") is None
    size = len(orjson.dumps({"report": noise}))
    assert (
        f"{size:,} bytes of JSON, over TRIGGERS_RESULT_OUTPUT_MAX_BYTES (100,000)"
        in (final[big]["output_left_out"])
    )
    assert final[deep].get("output_data") is None
    assert "nests deeper than 128 levels" in final[deep]["output_left_out"]
    assert final[wordy]["status"] == "failed" and len(final[wordy]["error_message"]) <= 8192
    assert final[wordy]["error_message"].endswith(f"... ({len(noise) - 8144:,} more characters)")
    assert final[fine]["output_data"] == {"ok": True} and final[fine].get("output_left_out") is None
    assert "transaction failed" not in pipeline.log("worker")
    shown = pipeline.cli("executions", "chatty", "-o", "json").stdout
    assert "over TRIGGERS_RESULT_OUTPUT_MAX_BYTES" in shown
    base = start_serve(pipeline)
    record = httpx.get(f"{base}/v1/triggers/chatty/executions/{big}", headers=ALPHA).json()
    assert record["output_left_out"] == final[big]["output_left_out"]
    page = httpx.get(
        f"{base}/ui/triggers/chatty/executions/{big}", cookies={"triggers_ui_key": "k-alpha"}
    ).text
    assert "left out: " in page and "over TRIGGERS_RESULT_OUTPUT_MAX_BYTES" in page


def test_a_fire_over_its_bound_is_a_dead_letter_and_the_dispatcher_goes_on(
    pipeline: Pipeline,
) -> None:
    """A fire of 2 MB that compresses well passes the broker (1 MiB after compression);
    its record and command then depend on how well they compress: the dispatcher
    refuses it by its own size instead, the same for every input."""
    pipeline.start_worker_with(
        "trigger: {id: plain, name: Plain, type: event, overlap: allow_all,"
        " max_concurrent: 10, event: {pattern: go.now}, agent: {id: external}}\n"
    )
    fire = {
        "execution_id": "huge-1",
        "trigger_id": "plain",
        "trigger_name": "Plain",
        "agent_id": "external",
        "workspace_id": "default",
        "cause": {"type": "manual"},
        "input": {"text": "a" * 2_000_000},
        "fired_at": datetime.now().astimezone().isoformat(),
    }
    producer = Producer(
        {"bootstrap.servers": pipeline.bootstrap, "compression.type": "lz4",
         "message.max.bytes": 6_000_000}
    )  # fmt: skip
    producer.produce(pipeline.topic(topics.TRIGGER_FIRES), key=b"plain", value=orjson.dumps(fire))
    assert producer.flush(15) == 0
    pipeline.emit({"type": "go.now", "source": "t", "id": "after"})
    with reading(pipeline.bootstrap, pipeline.topic(topics.DEAD_LETTERS)) as letters:
        [letter] = letters(lambda ls: len(ls) >= 1, timeout=60)
    assert "over the 1,000,000 a fire may take" in letter["error"], letter["error"]
    with reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_EXECUTIONS)) as executions:
        [after] = executions(lambda rs: len(rs) >= 1, timeout=60)
    assert after["cause"]["event_id"] == "after"
