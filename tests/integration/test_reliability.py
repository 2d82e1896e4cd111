"""Reliability on the real broker: kills (short chaos run), poison input on every input
topic and endpoint, fuzzing of the webhook endpoint, workspace isolation on every `/v1`
route, and secrets that never leave the process."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from processor import topics
from tests.integration import chaos
from tests.integration.conftest import KAFKA_SH
from tests.integration.kafka import Pipeline, reading, settle, start_serve

ALPHA = {"Authorization": "Bearer k-alpha"}
BETA = {"Authorization": "Bearer k-beta"}
SECRET_VALUE = "s3cr3t-value-that-must-never-leak-7f1c"

TRIGGERS = """
trigger:
  id: poison-check
  name: Poison check
  workspace: alpha
  type: event
  overlap: allow_all
  event: {pattern: health.ok}
  agent: {id: a}
---
trigger:
  id: hooked
  name: Hooked
  workspace: alpha
  type: webhook
  overlap: allow_all
  webhook:
    endpoint: /hooks/fuzz
    authentication: {type: hmac, header: X-Signature, secret: "${FUZZ_SECRET}"}
  agent: {id: a, input_mapping: {text: $.body.text}}
"""

EVENT_POISON: dict[str, bytes] = {
    "malformed JSON": b'{"type": "health.ok", ',
    "wrong types": b'{"type": 42, "source": ["not", "a", "string"], "time": true}',
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "invalid UTF-8": b'{"type": "health.\xff\xfe", "source": "x"}',
    "unknown CloudEvents version": b'{"specversion": "0.3", "type": "health.ok", "source": "x"}',
    "huge": b'{"type": "health.ok", "data": "' + b"x" * (1024 * 1024 + 10) + b'"}',
    "no value": b"",
    "not an object": b'"health.ok"',
}


def deploy(
    pipeline: Pipeline, tmp_path: Path, serve_env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen[bytes]]:
    """TRIGGERS applied, `serve` and a ready worker started (both know the secret);
    the service's base URL and the worker process."""
    (tmp_path / "t.yaml").write_text(TRIGGERS)
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    secret = {"FUZZ_SECRET": SECRET_VALUE}
    base = start_serve(pipeline, extra_env={**secret, **(serve_env or {})})
    worker = pipeline.start("worker", name="worker", extra_env=secret)
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    return base, worker


def test_short_chaos_run_is_exactly_once(pipeline: Pipeline) -> None:
    """`make chaos` in small: SIGKILLs and rebalances, then the read_committed verifier."""
    log = io.StringIO()
    report = chaos.run(pipeline, events=4000, kills=2, seed=11, hosts=20, timeout=600, out=log)
    assert len(report["kills"]) == 2, log.getvalue()
    assert report["missing_count"] == 0, log.getvalue()
    assert report["unexpected"] == [] and report["duplicated"] == {}, log.getvalue()
    assert report["transactions_closed"], log.getvalue()
    assert report["window_count_mismatches"] == {}, log.getvalue()
    assert report["expected_executions"] > 500


def test_short_chaos_run_with_the_dispatcher_in_processes_of_its_own_is_exactly_once(
    pipeline: Pipeline,
) -> None:
    """The same, with TRIGGERS_WORKER_DISPATCHER=false workers and two `triggers
    dispatcher` processes; the kills go round all four (each dispatcher killed once)."""
    log = io.StringIO()
    report = chaos.run(
        pipeline, events=4000, kills=4, seed=13, hosts=20, timeout=600, out=log, split=True
    )
    assert [k.split()[-1].rsplit("-", 1)[0] for k in report["kills"]] == [
        "a",
        "b",
        "dispatcher-1",
        "dispatcher-2",
    ], log.getvalue()
    assert report["missing_count"] == 0, log.getvalue()
    assert report["unexpected"] == [] and report["duplicated"] == {}, log.getvalue()
    assert report["transactions_closed"], log.getvalue()
    assert report["window_count_mismatches"] == {}, log.getvalue()
    assert report["expected_executions"] > 500


def test_workers_scaling_1_to_3_to_1_lose_and_double_nothing(pipeline: Pipeline) -> None:
    """Scale out and back under a stream (SIGTERM each, then one SIGKILL), then the same
    read_committed verifier and window oracle."""
    log = io.StringIO()
    report = chaos.scale_out_and_back(pipeline, events=6000, seed=5, hosts=20, timeout=600, out=log)
    assert len(report["steps"]) == 5, log.getvalue()
    assert report["missing_count"] == 0, log.getvalue()
    assert report["unexpected"] == [] and report["duplicated"] == {}, log.getvalue()
    assert report["transactions_closed"], log.getvalue()
    assert report["window_count_mismatches"] == {}, log.getvalue()
    assert report["expected_executions"] > 500


def test_poison_on_every_input_topic_is_dead_lettered_and_processing_goes_on(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    base, _ = deploy(pipeline, tmp_path)

    def big_producer_send(spec: topics.TopicSpec, value: bytes | None, key: bytes | None) -> None:
        from confluent_kafka import Producer

        producer = Producer(
            {
                "bootstrap.servers": pipeline.bootstrap,
                "message.max.bytes": 4 * 1024 * 1024,
                "partitioner": "murmur2_random",
            }
        )
        producer.produce(pipeline.topic(spec), value=value, key=key)
        assert producer.flush(30) == 0

    for name, value in EVENT_POISON.items():
        big_producer_send(topics.EVENTS, value or None, name.encode())
    results_poison = [
        b"{not json",
        b'{"execution_id": 7, "status": "done"}',
        b'{"execution_id": "x", "trigger_id": "poison-check", "status": "completed"}',
    ]
    for value in results_poison:
        pipeline.produce(topics.AGENT_RUN_RESULTS, value, key=b"x")
    webhook_poison = [b"\xff\xfe", b'{"trigger_id": "hooked"}']
    for value in webhook_poison:
        pipeline.produce(topics.WEBHOOKS, value, key=b"hooked")
    # A broken definition record (not written by our CLI or API) is logged and ignored.
    for key, value in [(b"bad-1", b"{oops"), (b"\xff", b"{}"), (None, b"{}"), (b"bad-2", b"[1]")]:
        pipeline.produce(topics.TRIGGER_DEFINITIONS, value, key=key)
    # ...and then a good event still fires.
    pipeline.emit({"type": "health.ok", "source": "probe", "id": "after-poison"})

    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        [command] = runs(lambda cs: len(cs) >= 1, timeout=90)
    assert command["cause"]["event_id"] == "after-poison"
    expected = len(EVENT_POISON) + len(results_poison) + len(webhook_poison)
    with reading(pipeline.bootstrap, pipeline.topic(topics.DEAD_LETTERS)) as letters:
        letters(lambda ls: len(ls) >= expected, timeout=90)
        dead = settle(letters, 3)
    assert len(dead) == expected, [d["error"] for d in dead]
    by_key = {
        base64.b64decode(d["key"]).decode(): d for d in dead if d["topic"].endswith(".events")
    }
    assert set(by_key) == set(EVENT_POISON)
    assert "not valid JSON" in by_key["malformed JSON"]["error"]
    assert "specversion" in by_key["unknown CloudEvents version"]["error"]
    assert "the limit is" in by_key["huge"]["error"]
    assert by_key["huge"]["value_bytes"] > 1024 * 1024
    assert all(d["error"] for d in dead)
    # Both processes are alive and still serve.
    assert all(p.poll() is None for p in pipeline.processes)
    assert httpx.get(f"{base}/readyz").status_code == 200
    names = [t["name"] for t in httpx.get(f"{base}/v1/triggers", headers=ALPHA).json()["items"]]
    assert names == ["Hooked", "Poison check"]


def test_webhook_endpoint_fuzzed_never_fails_and_secrets_never_leak(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    base, _ = deploy(pipeline, tmp_path)
    client = httpx.Client(base_url=base, timeout=30)
    statuses: list[int] = []

    bodies = st.one_of(
        st.binary(max_size=4096),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=50),
            lambda inner: (
                st.lists(inner, max_size=5)
                | st.dictionaries(st.text(max_size=10), inner, max_size=5)
            ),
            max_leaves=30,
        ).map(lambda value: json.dumps(value).encode()),  # json: big ints are valid JSON too
        st.integers(1, 2000).map(lambda depth: b"[" * depth + b"]" * depth),
    )
    header_values = st.text(
        alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=80
    ).map(str.strip)  # HTTP clients refuse header values with outer spaces

    @settings(
        max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None
    )
    @given(
        body=bodies,
        content_type=st.sampled_from(
            ["application/json", "application/x-www-form-urlencoded", "text/plain", "", "a/b"]
        ),
        signature=header_values,
        method=st.sampled_from(["POST", "PUT", "GET", "DELETE"]),
        path=st.sampled_from(["/hooks/fuzz", "/webhooks/hooked", "/webhooks/nope", "/hooks/x"]),
    )
    def call(body: bytes, content_type: str, signature: str, method: str, path: str) -> None:
        answer = client.request(
            method,
            path,
            content=body,
            headers={"Content-Type": content_type, "X-Signature": signature},
        )
        statuses.append(answer.status_code)
        assert answer.status_code < 500 or answer.status_code == 503, (answer, body[:200])
        assert SECRET_VALUE not in answer.text

    call()
    assert {401, 404} <= set(statuses)

    # A correctly signed call goes through; the secret is in no topic, log or response.
    body = orjson.dumps({"text": "hello"})
    signature = hmac.new(SECRET_VALUE.encode(), body, hashlib.sha256).hexdigest()
    accepted = client.post(
        "/hooks/fuzz",
        content=body,
        headers={"Content-Type": "application/json", "X-Signature": signature},
    )
    assert accepted.status_code == 202, accepted.text
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        runs(lambda cs: any(c["input"].get("text") == "hello" for c in cs), timeout=60)
    for spec in topics.ALL_TOPICS:
        with reading(pipeline.bootstrap, pipeline.topic(spec), raw=True) as records:
            for value in settle(records, 1):
                assert SECRET_VALUE.encode() not in (value or b""), spec.name
    for name in ("serve", "worker"):
        assert SECRET_VALUE not in pipeline.log(name)
    for path in ("/v1/triggers", "/v1/triggers/hooked", "/openapi.json", "/metrics"):
        assert SECRET_VALUE not in client.get(path, headers=ALPHA).text


def _v1_routes(spec: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (method.upper(), path)
        for path, methods in spec["paths"].items()
        if path.startswith("/v1/")
        for method in methods
    ]


def test_compressed_events_fire_whatever_the_codec(pipeline: Pipeline, tmp_path: Path) -> None:
    """Producers compress as they like; the worker reads every codec Kafka has (the
    bench found it crashing on lz4 before aiokafka got its codec library)."""
    from confluent_kafka import Producer

    _, worker = deploy(pipeline, tmp_path)
    # librdkafka sends a batch uncompressed unless compressing makes it smaller: ten
    # alike events per batch make sure it does.
    ids = []
    for codec in ["gzip", "snappy", "lz4", "zstd"]:
        producer = Producer(
            {"bootstrap.servers": pipeline.bootstrap, "compression.type": codec, "linger.ms": 50}
        )
        for n in range(10):
            ids.append(f"{codec}-{n}")
            event = {"type": "health.ok", "source": "probe", "id": ids[-1], "data": "x" * 200}
            producer.produce(pipeline.topic(topics.EVENTS), value=orjson.dumps(event), key=b"k")
        assert producer.flush(30) == 0
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        commands = runs(lambda cs: len(cs) >= len(ids), timeout=90)
    assert sorted(c["cause"]["event_id"] for c in commands) == sorted(ids)
    assert worker.poll() is None


def test_every_v1_route_needs_a_key_and_sees_only_its_workspace(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    base, _ = deploy(pipeline, tmp_path, {"TRIGGERS_OPERATOR_WORKSPACE": "alpha"})
    pipeline.emit({"type": "health.ok", "source": "probe", "id": "one"})
    pipeline.produce(topics.EVENTS, b"{broken")
    client = httpx.Client(base_url=base, timeout=30)
    deadline = time.monotonic() + 60
    while not client.get("/v1/triggers/poison-check/executions", headers=ALPHA).json()["items"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    execution = client.get("/v1/triggers/poison-check/executions", headers=ALPHA).json()
    execution_id = execution["items"][0]["execution_id"]
    routes = _v1_routes(client.get("/openapi.json").json())
    assert len(routes) >= 14, routes

    def concrete(path: str) -> str:
        return path.replace("{trigger_id}", "poison-check").replace("{execution_id}", execution_id)

    event = orjson.dumps({"type": "health.ok", "source": "x"})
    for method, path in routes:
        url = concrete(path)
        body = event if path.endswith("/explain") else b"{}"
        anonymous = client.request(method, url, content=body)
        assert anonymous.status_code == 401, (method, path, anonymous.status_code)
        other = client.request(method, url, content=body, headers=BETA)
        leaked = [s for s in ("Poison check", "health.ok", execution_id) if s in other.text]
        assert not leaked, (method, path, leaked)
        if "{trigger_id}" in path:
            assert other.status_code in (404, 409), (method, path, other.status_code)
    # The workspace-wide routes answer beta with nothing of alpha's.
    assert client.get("/v1/triggers", headers=BETA).json()["items"] == []
    assert client.post("/v1/explain", content=event, headers=BETA).json() == []
    letters = client.get("/v1/dead-letters", headers=BETA).json()
    assert letters == []
    assert any(
        "not valid JSON" in letter["error"]
        for letter in client.get("/v1/dead-letters", headers=ALPHA).json()
    )


def test_workers_and_gateway_ride_out_a_broker_restart(
    pipeline: Pipeline, our_broker: str, tmp_path: Path
) -> None:
    base, worker = deploy(pipeline, tmp_path, {"TRIGGERS_WEBHOOK_ACK_TIMEOUT_SECONDS": "2"})

    def signed(text: str) -> httpx.Response:
        body = orjson.dumps({"text": text})
        signature = hmac.new(SECRET_VALUE.encode(), body, hashlib.sha256).hexdigest()
        headers = {"Content-Type": "application/json", "X-Signature": signature}
        return httpx.post(f"{base}/hooks/fuzz", content=body, headers=headers, timeout=30)

    pipeline.emit({"type": "health.ok", "source": "probe", "id": "before"})
    assert signed("before").status_code == 202
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        runs(lambda cs: len(cs) >= 2, timeout=60)
    subprocess.run([str(KAFKA_SH), "down"], check=True, timeout=120)
    try:
        refused = signed("while down")
        assert refused.status_code == 503, refused.text
        time.sleep(5)
    finally:
        subprocess.run([str(KAFKA_SH), "up"], check=True, timeout=300)
    accepted = []
    deadline = time.monotonic() + 120
    while not accepted:
        answer = signed("after")
        if answer.status_code == 202:
            accepted.append("after")
        else:
            assert answer.status_code == 503 and time.monotonic() < deadline, answer.text
            time.sleep(1)
    pipeline.emit({"type": "health.ok", "source": "probe", "id": "after"})

    def causes(commands: list[dict]) -> set[str]:
        return {c["cause"].get("event_id") or c["input"].get("text") for c in commands}

    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs:
        runs(lambda cs: {"before", "after"} <= causes(cs) and len(cs) >= 4, timeout=240)
        commands = settle(runs, 3)  # everything read, a little after
    # Each acknowledged call and each event ran once; the 503'd call never did.
    assert sorted(c["cause"].get("event_id") or c["input"].get("text") for c in commands) == [
        "after",
        "after",
        "before",
        "before",
    ]
    assert worker.poll() is None, "the worker recovered by itself, without a restart"


def test_a_worker_asked_to_stop_with_the_broker_gone_exits_by_its_deadline(
    pipeline: Pipeline, our_broker: str
) -> None:
    """Faust's own stop flushes its producer with no deadline: a worker SIGTERMed (or
    Ctrl-C'd under `make run`) after the broker went away waited for ever. It now exits
    once TRIGGERS_WORKER_STOP_TIMEOUT_SECONDS have passed, and says why."""
    worker = pipeline.start(
        "worker", name="worker", extra_env={"TRIGGERS_WORKER_STOP_TIMEOUT_SECONDS": "5"}
    )
    pipeline.wait_ready("worker", "event-matcher started")
    subprocess.run([str(KAFKA_SH), "down"], check=True, timeout=120)
    try:
        asked = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(60)
        waited = time.monotonic() - asked
    finally:
        subprocess.run([str(KAFKA_SH), "up"], check=True, timeout=300)
    assert code == 1, pipeline.log("worker")[-3000:]
    assert 4 < waited < 30
    assert "had not stopped 5 s after it was asked to" in pipeline.log("worker")
