"""A worker's /healthz tells the truth about its consumers, on the real broker.

The stall is a real one: a transaction left open on `dispatch-state` (as a process
killed mid-transaction leaves it, until the broker times it out) holds the dispatcher's
restore, so fires pile up on `trigger-fires` and nothing takes them. Once the
transaction ends, the dispatcher catches up and the probe is healthy again.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
from confluent_kafka import Producer

from processor import topics
from tests.integration.kafka import Pipeline, free_port

TRIGGER = """
trigger:
  name: Every deploy
  type: event
  overlap: allow_all
  event: {pattern: "deploy.*"}
  agent: {id: a}
"""


def probe(port: int) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    return answer.status_code, answer.json()


def test_healthz_turns_503_while_a_consumer_is_stuck_and_200_once_it_moves(
    pipeline: Pipeline, tmp_path: Any
) -> None:
    (tmp_path / "t.yaml").write_text(TRIGGER)
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    zombie = Producer(
        {
            "bootstrap.servers": pipeline.bootstrap,
            "transactional.id": f"{pipeline.prefix}zombie",
            "transaction.timeout.ms": 300_000,
        }
    )
    zombie.init_transactions(30)
    zombie.begin_transaction()
    state = pipeline.topic(topics.DISPATCH_STATE)
    for partition in range(pipeline.settings.topic_partitions):
        zombie.produce(state, key=b"zombie/x", value=b"{}", partition=partition)
    zombie.flush(30)

    port = free_port()
    pipeline.start(
        "worker",
        name="worker",
        extra_env={
            "TRIGGERS_WORKER_METRICS_PORT": str(port),
            "TRIGGERS_WORKER_STALL_SECONDS": "8",
            "TRIGGERS_WORKER_HEALTH_INTERVAL_SECONDS": "1",
        },
    )
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    pipeline.wait_ready("worker", "still have an open transaction")  # the dispatcher waits
    group = f"{pipeline.settings.app_id}-dispatcher"
    deadline = time.monotonic() + 60
    assert probe(port)[0] == 200  # stuck, but not for long enough yet
    n = 0
    while True:
        n += 1
        pipeline.emit({"id": f"d-{n}", "type": "deploy.finished", "source": "ci"})
        status, report = probe(port)
        # Another group can look stalled for a moment on a loaded machine (seen once in
        # CI): wait for the dispatcher's own.
        if status == 503 and report.get("groups", {}).get(group, {}).get("stalled"):
            break
        assert time.monotonic() < deadline, report
        time.sleep(0.5)
    assert report["status"] == "stalled" and report["groups"][group]["stalled"]
    ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10)
    assert ready.status_code == 503  # the dispatcher has not started consuming
    assert report["groups"][group]["lag"] > 0
    metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    fires = pipeline.topic(topics.TRIGGER_FIRES)
    assert f'triggers_consumer_lag{{group="{group}",partition="' in metrics and fires in metrics

    zombie.abort_transaction(30)  # the stuck transaction ends: the dispatcher restores
    deadline = time.monotonic() + 90
    while True:
        status, report = probe(port)
        if status == 200:
            break
        assert time.monotonic() < deadline, orjson.dumps(report)
        time.sleep(0.5)
    assert report["status"] == "ok" and not report["groups"][group]["stalled"]
    assert httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200


def test_a_worker_without_the_dispatcher_and_a_dispatcher_process_run_a_fire_once(
    pipeline: Pipeline, tmp_path: Any
) -> None:
    """TRIGGERS_WORKER_DISPATCHER=false leaves dispatching to `triggers dispatcher`; the
    worker alone issues nothing, and the dispatcher process serves its own probes."""
    from tests.integration.kafka import reading, settle

    (tmp_path / "t.yaml").write_text(TRIGGER)
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    worker_port, dispatcher_port = free_port(), free_port()
    pipeline.start(
        "worker",
        name="worker",
        extra_env={
            "TRIGGERS_WORKER_DISPATCHER": "false",
            "TRIGGERS_WORKER_METRICS_PORT": str(worker_port),
        },
    )
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    pipeline.emit({"type": "deploy.started", "source": "ci", "id": "d-1"})
    with (
        reading(pipeline.bootstrap, pipeline.topic(topics.TRIGGER_FIRES)) as fires,
        reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs,
    ):
        fires(lambda fs: len(fs) == 1, timeout=60)
        assert settle(runs, 3) == []  # nobody dispatches yet
        groups = httpx.get(f"http://127.0.0.1:{worker_port}/healthz", timeout=10).json()
        assert not any(g.endswith("-dispatcher") for g in groups["groups"]), groups
        pipeline.start(
            "dispatcher",
            name="dispatcher",
            extra_env={"TRIGGERS_WORKER_METRICS_PORT": str(dispatcher_port)},
        )
        [command] = runs(lambda cs: len(cs) >= 1, timeout=60)
        assert settle(runs, 3) == [command]
    assert command["trigger_id"] and command["attempt"] == 1
    deadline = time.monotonic() + 30
    while httpx.get(f"http://127.0.0.1:{dispatcher_port}/readyz", timeout=10).status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    status, health = probe(dispatcher_port)
    assert status == 200 and list(health["groups"]) == [f"{pipeline.settings.app_id}-dispatcher"]
    metrics = httpx.get(f"http://127.0.0.1:{dispatcher_port}/metrics", timeout=10).text
    assert "triggers_dispatch_commands_total 1.0" in metrics
