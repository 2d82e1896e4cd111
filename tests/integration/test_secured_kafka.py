"""Every component through the broker's SASL_SSL listener (SCRAM, a CA made by kafka.sh).

The product's processes and CLI calls know only 127.0.0.1:9094 with its credentials; the
test reads results back through the plaintext listener of the same broker.
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from processor import topics
from processor.client import TriggersClient
from processor.config import Settings
from tests.integration.conftest import KAFKA_SH
from tests.integration.kafka import TRIGGERS, Pipeline, reading, start_serve

SECURED = "127.0.0.1:9094"
TRIGGERS_YAML = """
trigger:
  id: secured-deploys
  name: Secured deploys
  type: event
  overlap: allow_all
  event: {pattern: "deploy.*"}
  agent: {id: echo-agent}
---
trigger:
  id: secured-hook
  name: Secured hook
  type: webhook
  overlap: allow_all
  webhook:
    authentication: {type: hmac, header: X-Signature, secret: "${HOOK_SECRET}"}
  agent: {id: echo-agent}
"""


def secured_env(password: str = "triggers-secret") -> dict[str, str]:
    ca = subprocess.run([str(KAFKA_SH), "ca"], capture_output=True, text=True, check=True)
    return {
        "TRIGGERS_KAFKA_BOOTSTRAP": SECURED,
        "TRIGGERS_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "TRIGGERS_KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
        "TRIGGERS_KAFKA_SASL_USERNAME": "triggers",
        "TRIGGERS_KAFKA_SASL_PASSWORD": password,
        "TRIGGERS_KAFKA_SSL_CA_LOCATION": ca.stdout.strip(),
    }


@dataclass
class SecuredPipeline(Pipeline):
    """A deployment whose processes reach Kafka only through SASL_SSL."""

    password: str = "triggers-secret"

    @property
    def env(self) -> dict[str, str]:
        return {**super().env, **secured_env(self.password)}

    @property
    def secured_settings(self) -> Settings:
        env = secured_env(self.password)
        return Settings(
            kafka_bootstrap=SECURED,
            topic_prefix=self.prefix,
            app_id=self.prefix.rstrip("."),
            kafka_security_protocol=env["TRIGGERS_KAFKA_SECURITY_PROTOCOL"],
            kafka_sasl_mechanism=env["TRIGGERS_KAFKA_SASL_MECHANISM"],
            kafka_sasl_username="triggers",
            kafka_sasl_password=self.password,
            kafka_ssl_ca_location=env["TRIGGERS_KAFKA_SSL_CA_LOCATION"],
        )


@pytest.fixture
def secured(kafka_bootstrap: str, tmp_path: Path) -> Any:
    status = subprocess.run([str(KAFKA_SH), "status"], capture_output=True, text=True)
    if kafka_bootstrap != "127.0.0.1:9092" or "(ours" not in status.stdout:
        # Another checkout's broker has its own CA, which this one cannot know.
        pytest.skip("needs the broker this checkout's deploy/kafka/kafka.sh started")
    deployment = SecuredPipeline(bootstrap=kafka_bootstrap, workdir=tmp_path)
    yield deployment
    deployment.stop_all()


def test_the_whole_flow_runs_through_sasl_ssl(secured: SecuredPipeline, tmp_path: Path) -> None:
    created = secured.cli("topics", "create")
    assert "created" in created.stdout
    (tmp_path / "t.yaml").write_text(TRIGGERS_YAML)
    secured.cli("apply", "-f", str(tmp_path / "t.yaml"))
    secured.start("worker", name="worker")
    secured.start("runner", name="runner")
    base = start_serve(
        secured, extra_env={"HOOK_SECRET": "s3", "TRIGGERS_API_KEYS": '{"k-default": "default"}'}
    )
    secured.wait_ready("worker", "[^Worker]: Ready")
    secured.wait_ready("worker", "dispatcher restored")
    secured.wait_ready("runner", "runner consuming")

    secured.cli("emit", "deploy.finished", "--source", "ci", "--id", "cli-1")
    client = TriggersClient(settings=secured.secured_settings)
    client.emit("deploy.finished", source="ci", data={"by": "client"}, id="client-1")
    body = b'{"ref": "main"}'
    signature = hmac.new(b"s3", body, hashlib.sha256).hexdigest()
    answer = httpx.post(
        f"{base}/webhooks/secured-hook",
        content=body,
        headers={"X-Signature": signature, "Content-Type": "application/json"},
        timeout=20,
    )
    assert answer.status_code == 202, answer.text

    with reading(secured.bootstrap, secured.topic(topics.TRIGGER_EXECUTIONS)) as executions:
        records = executions(
            lambda rs: sum(r["status"] == "completed" for r in rs) >= 3, timeout=120
        )
    completed = {r["execution_id"]: r for r in records if r["status"] == "completed"}
    assert sorted(r["trigger_id"] for r in completed.values()) == [
        "secured-deploys",
        "secured-deploys",
        "secured-hook",
    ]
    listed = orjson.loads(secured.cli("executions", "--output", "json").stdout)
    assert {e["execution_id"] for e in listed if e["status"] == "completed"} == set(completed)
    deadline = time.monotonic() + 30
    while True:  # the service's own view of trigger-executions, read through SASL_SSL
        page = httpx.get(
            f"{base}/v1/triggers/secured-deploys/executions?status=completed",
            headers={"Authorization": "Bearer k-default"},
            timeout=20,
        )
        shown = {e["execution_id"] for e in page.json().get("items", [])}
        wanted = {i for i, r in completed.items() if r["trigger_id"] == "secured-deploys"}
        if page.status_code == 200 and shown == wanted:
            break
        assert time.monotonic() < deadline, page.text
        time.sleep(0.5)
    assert "triggers-secret" not in "".join(secured.log(n) for n in ("worker", "runner", "serve"))


def test_wrong_credentials_are_one_clear_error_naming_the_setting(
    secured: SecuredPipeline,
) -> None:
    secured.password = "not-the-password"
    started = time.monotonic()
    listed = secured.cli("list", check=False)
    assert listed.returncode == 1
    assert "refused the credentials" in listed.stderr
    assert "TRIGGERS_KAFKA_SASL_PASSWORD" in listed.stderr
    assert len(listed.stderr.strip().splitlines()) == 1, listed.stderr
    assert "not-the-password" not in listed.stderr + listed.stdout
    # A long-running component stops too, instead of retrying for ever.
    worker = subprocess.run(
        [TRIGGERS, "worker"], env=secured.env, capture_output=True, text=True, timeout=60
    )
    assert worker.returncode == 1
    assert "TRIGGERS_KAFKA_SASL_PASSWORD" in worker.stderr
    assert time.monotonic() - started < 45


def test_a_secured_protocol_without_credentials_is_refused_before_connecting(
    secured: SecuredPipeline,
) -> None:
    env = {**secured.env, "TRIGGERS_KAFKA_SASL_PASSWORD": ""}
    answer = subprocess.run([TRIGGERS, "list"], env=env, capture_output=True, text=True, timeout=60)
    assert answer.returncode == 1
    assert "needs TRIGGERS_KAFKA_SASL_USERNAME and TRIGGERS_KAFKA_SASL_PASSWORD" in answer.stderr
