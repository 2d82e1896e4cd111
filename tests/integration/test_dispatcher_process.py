"""`triggers worker` runs its dispatcher in a child process, on the real broker: the
worker's /metrics and /readyz answer for it, and it neither outlives the worker nor
lives on without it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from processor import topics
from tests.integration.kafka import Pipeline, reading
from tests.integration.test_worker_health import TRIGGER, free_port


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return stat[0] != "Z"


def wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.3)


@pytest.mark.timeout(240)
def test_the_child_dispatches_counts_on_the_workers_page_and_dies_with_it(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    (tmp_path / "t.yaml").write_text(TRIGGER)
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    port = free_port()
    worker = pipeline.start(
        "worker", name="worker", extra_env={"TRIGGERS_WORKER_METRICS_PORT": str(port)}
    )
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    pipeline.wait_ready("worker", "dispatcher process running")
    (child,) = children(worker.pid)
    wait_for(
        lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 200,
        60,
        "the worker never became ready",
    )

    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as collect:
        for n in range(3):
            pipeline.emit({"id": f"d-{n}", "type": "deploy.finished", "source": "ci"})
        commands = collect(lambda seen: len(seen) >= 3, 60)
    assert sorted(c["input"]["event"]["id"] for c in commands) == ["d-0", "d-1", "d-2"]

    def page() -> str:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text

    # The commands were written by the child; the worker's page counts them, once each.
    wait_for(lambda: "triggers_dispatch_commands_total 3.0" in page(), 30, page()[-3000:])
    text = page()
    assert text.count("# TYPE triggers_dispatch_commands_total counter") == 1
    assert 'triggers_transaction_seconds_count{loop="dispatcher",step="commit"}' in text
    assert 'triggers_transaction_seconds_count{loop="event-matcher",step="commit"}' in text
    assert 'triggers_transaction_seconds_count{loop="dispatcher",step="wait"}' in text

    os.kill(worker.pid, signal.SIGKILL)  # no orphan keeps dispatching
    worker.wait(10)
    wait_for(lambda: not alive(child), 10, "the dispatcher outlived its worker")


@pytest.mark.timeout(180)
def test_a_worker_whose_dispatcher_died_stops_and_one_sigterm_stops_both(
    pipeline: Pipeline,
) -> None:
    worker = pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "dispatcher process running")
    (child,) = children(worker.pid)
    os.kill(child, signal.SIGKILL)
    worker.wait(60)  # the worker stops rather than run on without a dispatcher
    pipeline.stop(worker)
    assert "the dispatcher process exited" in pipeline.log("worker")

    worker = pipeline.start("worker", name="worker-2")
    pipeline.wait_ready("worker-2", "dispatcher process running")
    (child,) = children(worker.pid)
    assert pipeline.stop(worker) == 0
    assert not alive(child)
    assert "dispatcher process stopping" in pipeline.log("worker-2")
