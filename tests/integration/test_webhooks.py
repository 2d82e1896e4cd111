"""The webhook gateway on the real broker."""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import orjson

from processor import topics
from tests.integration.conftest import KAFKA_SH
from tests.integration.kafka import ROOT, Pipeline, incompressible, reading, settle, start_serve

SLACK_TRIGGER = ROOT / "examples" / "slack-command-handler.yaml"
SLACK_SECRET = "slack-signing-secret-for-tests"


def slack_signed(body: bytes, secret: str = SLACK_SECRET) -> dict[str, str]:
    timestamp = str(int(time.time()))
    digest = hmac.new(
        secret.encode(), f"v0:{timestamp}:".encode() + body, hashlib.sha256
    ).hexdigest()
    return {
        "X-Slack-Request-Timestamp": timestamp,
        "X-Slack-Signature": f"v0={digest}",
        "Content-Type": "application/x-www-form-urlencoded",
    }


def test_slack_signed_command_becomes_an_agent_run_with_mapped_input(pipeline: Pipeline) -> None:
    pipeline.cli("apply", "-f", str(SLACK_TRIGGER))
    base = start_serve(pipeline, extra_env={"SLACK_WEBHOOK_SECRET": SLACK_SECRET})
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    body = urlencode(
        {
            "token": "x",
            "team_id": "T1",
            "channel_id": "C42",
            "user_id": "U7",
            "command": "/ask",
            "text": "why is the build red?",
        }
    ).encode()
    headers = slack_signed(body)
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        first = httpx.post(
            f"{base}/webhooks/slack/commands", content=body, headers=headers, timeout=20
        )
        assert first.status_code == 202, first.text
        execution_id = first.json()["execution_id"]
        retried = httpx.post(
            f"{base}/webhooks/slack/commands", content=body, headers=headers, timeout=20
        )
        assert retried.status_code == 202 and retried.json()["execution_id"] == execution_id
        runs(lambda cs: len(cs) >= 1, timeout=60)
        [command] = settle(runs, 3)
    assert command["execution_id"] == execution_id
    assert command["agent_id"] == "slack-bot"
    assert command["input"] == {"text": "why is the build red?", "user_id": "U7", "channel": "C42"}
    assert (
        command["cause"]["type"] == "webhook"
        and command["cause"]["path"] == "/webhooks/slack/commands"
    )

    with reading(pipeline.bootstrap, pipeline.topic(topics.WEBHOOKS)) as deliveries:
        stored = deliveries(lambda ds: len(ds) >= 2, timeout=30)
    assert all("x-slack-signature" in d["headers"] and SLACK_SECRET not in str(d) for d in stored)


def test_refusals_have_the_right_status_and_are_counted(pipeline: Pipeline, tmp_path: Path) -> None:
    (tmp_path / "hooks.yaml").write_text("""
trigger:
  id: gh
  name: GitHub pushes
  type: webhook
  webhook:
    endpoint: /hooks/github
    authentication: {type: github, secret: "${GH_SECRET}"}
    ip_whitelist: ["127.0.0.0/8"]
    rate_limit: {requests: 7, period: 1m}
  agent: {id: a, input_mapping: {ref: "$.body.ref", missing: "$.body.nope"}}
---
trigger:
  id: office
  name: Office only
  type: webhook
  webhook: {ip_whitelist: ["10.0.0.0/8"]}
  agent: {id: a}
---
trigger:
  id: disabled-hook
  name: Disabled
  type: webhook
  enabled: false
  webhook: {}
  agent: {id: a}
""")
    pipeline.cli("apply", "-f", str(tmp_path / "hooks.yaml"))
    base = start_serve(
        pipeline, extra_env={"GH_SECRET": "gh-secret", "TRIGGERS_WEBHOOK_MAX_BODY_BYTES": "1000"}
    )

    def github(body: bytes, **headers: str) -> httpx.Response:
        digest = hmac.new(b"gh-secret", body, hashlib.sha256).hexdigest()
        sent = {
            "X-Hub-Signature-256": f"sha256={digest}",
            "X-GitHub-Delivery": "d-1",
            "Content-Type": "application/json",
            **headers,
        }
        return httpx.post(f"{base}/hooks/github", content=body, headers=sent, timeout=20)

    assert httpx.post(f"{base}/webhooks/nope", json={}).status_code == 404
    assert httpx.post(f"{base}/webhooks/disabled-hook", json={}).status_code == 404
    wrong_method = httpx.get(f"{base}/hooks/github")
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    assert httpx.post(f"{base}/webhooks/office", json={}).status_code == 403
    unsigned = httpx.post(f"{base}/hooks/github", json={"ref": "main"})
    assert unsigned.status_code == 401 and unsigned.json() == {
        "error": "missing x-hub-signature-256 header"
    }
    assert github(b'{"ref": "main"}', **{"X-Hub-Signature-256": "sha256=00"}).status_code == 401
    assert github(b"{nope").status_code == 400
    deep = github(b'{"a": ' + b"[" * 300 + b"]" * 300 + b"}")  # no run could carry it
    assert deep.status_code == 400 and "nests deeper than 128 levels" in deep.json()["error"]
    assert github(b"\x00\x01", **{"Content-Type": "application/octet-stream"}).status_code == 415
    assert github(b'{"pad": "' + b"x" * 2000 + b'"}').status_code == 413
    accepted = github(b'{"ref": "main"}')
    assert accepted.status_code == 202
    limited = github(b'{"ref": "main"}')
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1

    metrics = httpx.get(f"{base}/metrics").text
    assert (
        'triggers_webhook_auth_failures_total{reason="missing x-hub-signature-256 header"} 1.0'
        in metrics
    )
    assert 'triggers_webhook_requests_total{status="202",trigger_id="gh"} 1.0' in metrics
    assert 'triggers_webhook_requests_total{status="429",trigger_id="gh"} 1.0' in metrics


def test_gateway_answers_503_while_the_broker_is_down_and_202_after(
    pipeline: Pipeline, our_broker: str
) -> None:
    pipeline.cli("apply", "-f", str(SLACK_TRIGGER))
    base = start_serve(
        pipeline,
        extra_env={
            "SLACK_WEBHOOK_SECRET": SLACK_SECRET,
            "TRIGGERS_WEBHOOK_ACK_TIMEOUT_SECONDS": "2",
        },
    )
    body = urlencode({"channel_id": "C1", "user_id": "U1", "text": "down?"}).encode()
    accepted: list[str] = []
    subprocess.run([str(KAFKA_SH), "down"], check=True, timeout=120)
    try:
        refused = httpx.post(
            f"{base}/webhooks/slack/commands", content=body, headers=slack_signed(body), timeout=30
        )
        assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
    finally:
        subprocess.run([str(KAFKA_SH), "up"], check=True, timeout=300)
    deadline = time.monotonic() + 90
    attempt = 0
    while not accepted:
        attempt += 1
        text = f"retry {attempt}"
        retry = urlencode({"channel_id": "C1", "user_id": "U1", "text": text}).encode()
        answer = httpx.post(
            f"{base}/webhooks/slack/commands",
            content=retry,
            headers=slack_signed(retry),
            timeout=30,
        )
        if answer.status_code == 202:
            accepted.append(text)
        else:
            assert answer.status_code == 503 and time.monotonic() < deadline, answer.text
            time.sleep(1)
    with reading(pipeline.bootstrap, pipeline.topic(topics.WEBHOOKS)) as deliveries:
        deliveries(lambda ds: len(ds) >= 1, timeout=30)
        stored = settle(deliveries, 3)
    # Only what was answered 2xx is in Kafka: none of the calls answered 503.
    assert [d["body"]["text"] for d in stored] == accepted


def test_two_gateway_processes_on_one_port_store_every_call_and_sum_their_metrics(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    (tmp_path / "hook.yaml").write_text("""
trigger:
  id: json-hook
  name: JSON hook
  type: webhook
  webhook:
    endpoint: /hooks/json
    authentication: {type: hmac, header: X-Signature, secret: "${HOOK_SECRET}"}
  agent: {id: a}
""")
    pipeline.cli("apply", "-f", str(tmp_path / "hook.yaml"))
    base = start_serve(pipeline, extra_env={"HOOK_SECRET": "s3", "TRIGGERS_HTTP_WORKERS": "2"})
    [serve] = [p for p in pipeline.processes if p.args[1] == "serve"]
    children = subprocess.run(
        ["pgrep", "-f", "-P", str(serve.pid), "spawn_main"], capture_output=True, text=True
    ).stdout.split()
    assert len(children) == 2, children

    sent = []
    for n in range(40):  # a connection each, so the kernel hands them to both processes
        body = b'{"n": %d,  "nested": {"a": [1, 2.50, "\\u00e9"]}}\n' % n
        signature = hmac.new(b"s3", body, hashlib.sha256).hexdigest()
        # /readyz answered by one process says nothing of the other: a process still loading
        # the definitions answers 503 with Retry-After, and a sender calls again.
        deadline = time.monotonic() + 30
        while True:
            answer = httpx.post(
                f"{base}/hooks/json",
                content=body,
                headers={"X-Signature": signature, "Content-Type": "application/json"},
                timeout=20,
            )
            if answer.status_code != 503 or time.monotonic() > deadline:
                break
            assert "Retry-After" in answer.headers, answer.headers
            time.sleep(0.2)
        assert answer.status_code == 202, answer.text
        sent.append(body)
    with reading(pipeline.bootstrap, pipeline.topic(topics.WEBHOOKS), raw=True) as deliveries:
        deliveries(lambda ds: len(ds) >= 40, timeout=30)
        stored = settle(deliveries, 2)
    assert len(stored) == 40
    # The JSON body is stored as it came (not parsed and written again), and reads back.
    for body, record in zip(sent, stored, strict=True):
        assert b'"body":' + body.strip() + b"}" in record
        assert orjson.loads(record)["body"] == orjson.loads(body)

    metrics = httpx.get(f"{base}/metrics").text
    assert 'triggers_webhook_requests_total{status="202",trigger_id="json-hook"} 40.0' in metrics


def test_a_body_or_run_input_larger_than_its_topic_takes_is_413_not_a_retry(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """A gateway allowed larger bodies than `webhooks` takes answered 503 with
    Retry-After: a sender retried the same body for ever. Likewise a run's input."""
    (tmp_path / "hooks.yaml").write_text(
        "trigger: {id: big, name: Big, workspace: alpha, type: webhook,"
        " webhook: {endpoint: /hooks/big}, agent: {id: a}}\n"
    )
    pipeline.cli("apply", "-f", str(tmp_path / "hooks.yaml"))
    base = start_serve(pipeline, extra_env={"TRIGGERS_WEBHOOK_MAX_BODY_BYTES": "4000000"})
    noise = incompressible(1_250_000)
    hook = httpx.post(f"{base}/hooks/big", json={"report": noise}, timeout=30)
    assert hook.status_code == 413, hook.text
    assert "the delivery is too large to keep: the record is" in hook.json()["error"]
    assert "Retry-After" not in hook.headers
    run = httpx.post(
        f"{base}/v1/triggers/big/run",
        json={"input": {"report": noise}},
        headers={"Authorization": "Bearer k-alpha"},
        timeout=30,
    )
    assert run.status_code == 413, run.text
    assert "the run's input is too large: its fire would be" in run.json()["detail"]
    heavy = {"name": "Heavy", "type": "event", "event": {"pattern": "x.*"}}
    heavy["agent"] = {"id": "a", "input": {"manual": noise}}
    created = httpx.post(
        f"{base}/v1/triggers", json=heavy, headers={"Authorization": "Bearer k-alpha"}, timeout=30
    )
    assert created.status_code == 413, created.text
    assert "bytes, more than" in created.json()["detail"]
    small = httpx.post(f"{base}/hooks/big", json={"report": "ok"}, timeout=30)
    assert small.status_code == 202, small.text


def test_a_delivery_whose_fire_would_pass_its_bound_is_a_dead_letter_not_a_lost_fire(
    pipeline: Pipeline,
) -> None:
    """A 600 KB body mapped twice into the input made a 1.5 MB fire: the broker refused
    it after Faust's send, which only logged it. The caller held an execution id that
    never came to be."""
    pipeline.start_worker_with(
        "trigger: {id: mapped, name: Mapped, type: webhook, overlap: allow_all,"
        " max_concurrent: 10, webhook: {endpoint: /hooks/mapped},"
        " agent: {id: a, input_mapping: {body: $.body, again: $.body.big}}}\n"
    )
    base = start_serve(pipeline)
    with (
        reading(pipeline.bootstrap, pipeline.topic(topics.DEAD_LETTERS)) as letters,
        reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires,
    ):
        large = httpx.post(f"{base}/hooks/mapped", json={"big": incompressible(750_000)})
        assert large.status_code == 202, large.text
        small = httpx.post(f"{base}/hooks/mapped", json={"big": "ok"})
        [letter] = letters(lambda seen: len(seen) >= 1, timeout=60)
        [fire] = fires(lambda seen: len(seen) >= 1, timeout=60)
    assert "the fire of trigger 'mapped' is" in letter["error"], letter["error"]
    assert letter["topic"] == pipeline.topic(topics.TRIGGER_FIRES)
    assert fire["execution_id"] == small.json()["execution_id"]
