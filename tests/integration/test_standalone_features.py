"""Run now, Slack's handshake, event input mapping and data limits, young topics and
broker errors, each through the real broker."""

from __future__ import annotations

import subprocess
import time
import uuid
from typing import Any

import httpx
import orjson

from processor import topics
from processor.config import Settings
from processor.kafka.admin import create_topics
from processor.kafka.reader import read_to_end
from tests.integration.kafka import ROOT, TRIGGERS, Pipeline, reading, settle, start_serve
from tests.integration.test_webhooks import slack_signed

REPORT = ROOT / "examples" / "daily-sales-report.yaml"
SLACK = ROOT / "examples" / "slack-command-handler.yaml"
SECRET = "slack-signing-secret-for-tests"


def test_run_now_from_the_cli_and_the_api_starts_one_manual_run_each(pipeline: Pipeline) -> None:
    report = pipeline.workdir / "report.yaml"  # two runs at once: no overlap policy in play
    report.write_text(REPORT.read_text() + "  max_concurrent: 5\n")
    pipeline.cli("apply", "-f", str(report))
    trigger_id = pipeline.cli("get", "Daily Sales Report", "-o", "id").stdout.strip()
    base = start_serve(
        pipeline,
        extra_env={
            "TRIGGERS_API_KEYS": '{"k-alpha": "default", "k-beta": "beta",'
            ' "k-ci": {"workspace": "default", "name": "ci-bot"}}'
        },
    )
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    alpha = {"Authorization": "Bearer k-alpha"}
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        started = pipeline.cli("run", "Daily Sales Report", "--input", '{"day": "2026-11-28"}')
        cli_id = started.stdout.split("execution_id=")[1].strip()
        url = f"{base}/v1/triggers/{trigger_id}/run"
        first = httpx.post(
            url, headers={**alpha, "Idempotency-Key": "k1"}, json={"input": {"x": 1}}
        )
        again = httpx.post(
            url, headers={**alpha, "Idempotency-Key": "k1"}, json={"input": {"x": 1}}
        )
        assert first.status_code == again.status_code == 202
        assert first.json() == again.json()
        assert httpx.post(url, headers={"Authorization": "Bearer k-beta"}).status_code == 404
        assert httpx.post(url, headers=alpha, content=b"[1]").status_code == 422
        named = httpx.post(url, headers={"Authorization": "Bearer k-ci"})
        assert named.status_code == 202

        commands = runs(lambda seen: len(manual(seen)) >= 3)
        commands += settle(runs, 3)
    # The schedule (9:00 in New York) is live: a fire due while the test runs is no run-now.
    by_id = {c["execution_id"]: c for c in manual(commands)}
    assert set(by_id) == {cli_id, first.json()["execution_id"], named.json()["execution_id"]}
    # Who asked: the key's name when it has one (never the key), else its workspace.
    assert by_id[named.json()["execution_id"]]["cause"]["requested_by"] == "api:ci-bot"
    assert "k-ci" not in str(by_id[named.json()["execution_id"]])
    from_cli = by_id[cli_id]
    assert from_cli["cause"]["type"] == "manual"
    assert from_cli["cause"]["requested_by"].startswith("cli:")
    assert from_cli["input"] == {
        "report_type": "daily_sales",
        "recipients": ["team@company.com"],
        "day": "2026-11-28",
    }
    assert by_id[first.json()["execution_id"]]["cause"]["requested_by"] == "api:default"

    pipeline.cli("disable", "Daily Sales Report")
    refused = pipeline.cli("run", "Daily Sales Report", check=False)
    assert refused.returncode == 1
    assert "is disabled" in refused.stderr and "Traceback" not in refused.stderr
    deadline = time.monotonic() + 10
    while (answer := httpx.post(url, headers=alpha)).status_code != 409:
        assert time.monotonic() < deadline, answer.text  # the view sees the edit within a second
        time.sleep(0.2)
    assert "disabled" in answer.json()["detail"]


def manual(commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [c for c in commands if c["cause"]["type"] == "manual"]


def test_slack_url_verification_answers_the_challenge_and_starts_nothing(
    pipeline: Pipeline,
) -> None:
    pipeline.cli("apply", "-f", str(SLACK))
    base = start_serve(pipeline, extra_env={"SLACK_WEBHOOK_SECRET": SECRET})
    body = orjson.dumps(
        {"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV", "type": "url_verification"}
    )
    headers = {**slack_signed(body, SECRET), "Content-Type": "application/json"}
    with reading(pipeline.bootstrap, pipeline.topic(topics.WEBHOOKS)) as deliveries:
        answer = httpx.post(f"{base}/webhooks/slack/commands", content=body, headers=headers)
        assert answer.status_code == 200
        assert answer.json() == {"challenge": "3eZbrw1aBm2rZgRNFdxV"}
        unsigned = httpx.post(
            f"{base}/webhooks/slack/commands",
            content=body,
            headers={"Content-Type": "application/json"},
        )
        assert unsigned.status_code == 401  # the handshake is checked like any call
        assert settle(deliveries, 2) == []


def test_event_input_mapping_applies_and_large_data_is_cut_with_a_note(
    pipeline: Pipeline,
) -> None:
    trigger = {
        "trigger": {
            "name": "Deploys",
            "type": "event",
            "max_concurrent": 5,
            "event": {"pattern": "deploy.*"},
            "agent": {"id": "a", "input_mapping": {"service": "$.data.service", "who": "$.source"}},
        }
    }
    path = pipeline.workdir / "deploys.yaml"
    path.write_bytes(orjson.dumps(trigger))
    pipeline.cli("apply", "-f", str(path))
    pipeline.start("worker", name="worker", extra_env={"TRIGGERS_EVENT_DATA_MAX_BYTES": "100"})
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        pipeline.emit(
            {"type": "deploy.done", "source": "ci", "id": "d1", "data": {"service": "api"}}
        )
        big = {"service": "web", "log": "x" * 500}
        pipeline.emit({"type": "deploy.done", "source": "ci", "id": "d2", "data": big})
        commands = runs(lambda seen: len(seen) >= 2)
    small, large = sorted(commands, key=lambda c: c["input"]["event"]["id"])
    assert small["input"]["service"] == "api" and small["input"]["who"] == "ci"
    assert small["input"]["event"]["data"] == {"service": "api"}
    assert "data" not in large["input"]["event"]
    assert large["input"]["event"]["data_truncated"] is True
    assert large["input"]["event"]["data_bytes"] == len(orjson.dumps(big))
    assert large["input"]["service"] is None  # mapped from the event as it is in the input


def test_readers_read_a_topic_the_moment_it_was_created(kafka_bootstrap: str) -> None:
    for _ in range(3):
        settings = Settings(
            kafka_bootstrap=kafka_bootstrap, topic_prefix=f"y{uuid.uuid4().hex[:8]}."
        )
        create_topics(settings)
        name = topics.topic_name(topics.TRIGGER_EXECUTIONS, settings)
        assert list(read_to_end(settings, name)) == []


def test_a_cli_reader_without_a_broker_fails_in_one_line(pipeline: Pipeline) -> None:
    env = {**pipeline.env, "TRIGGERS_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    done = subprocess.run([TRIGGERS, "list"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error:")
