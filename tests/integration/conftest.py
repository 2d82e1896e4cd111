"""Integration tests run against a real Kafka broker.

The broker named by TRIGGERS_KAFKA_BOOTSTRAP is used when set; otherwise the project's
own `deploy/kafka/kafka.sh up` starts one on 127.0.0.1:9092 (a no-op if one answers),
and the session stops it at the end if it started it (TRIGGERS_KEEP_KAFKA=1 keeps it).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.config import Settings
from processor.kafka.admin import create_topics, wait_for_broker
from tests.integration.kafka import ROOT, Pipeline

KAFKA_SH = ROOT / "deploy" / "kafka" / "kafka.sh"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    given = os.environ.get("TRIGGERS_KAFKA_BOOTSTRAP")
    if given:
        wait_for_broker(Settings(kafka_bootstrap=given), 15)
        yield given
        return
    status = subprocess.run([str(KAFKA_SH), "status"], capture_output=True, text=True)
    started = "not running" in status.stdout
    subprocess.run([str(KAFKA_SH), "up"], check=True, timeout=900)
    yield "127.0.0.1:9092"
    if started and os.environ.get("TRIGGERS_KEEP_KAFKA") != "1":
        subprocess.run([str(KAFKA_SH), "down"], check=False, timeout=120)


@pytest.fixture
def pipeline(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Pipeline]:
    """A fresh deployment with its own topics; its processes are stopped afterwards."""
    deployment = Pipeline(bootstrap=kafka_bootstrap, workdir=tmp_path)
    create_topics(deployment.settings)
    yield deployment
    deployment.stop_all()
    deployment.delete_topics()


@pytest.fixture
def our_broker(kafka_bootstrap: str) -> str:
    """The broker, if this checkout started it (so a test may stop and restart it)."""
    status = subprocess.run([str(KAFKA_SH), "status"], capture_output=True, text=True)
    if "(ours" not in status.stdout:  # "running (not ours)" contains "ours" too
        pytest.skip("the broker was not started by this checkout; not stopping someone else's")
    return kafka_bootstrap
