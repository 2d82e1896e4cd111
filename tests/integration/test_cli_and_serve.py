"""The CLI verbs and the HTTP service against the real broker."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from processor import topics
from tests.integration.kafka import ROOT, Pipeline, free_port

EXAMPLES = ROOT / "examples"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_topics_create_is_idempotent(pipeline: Pipeline) -> None:
    again = pipeline.cli("topics", "create")
    assert "created" not in again.stdout
    assert f"exists  {pipeline.prefix}trigger-definitions (1 partitions)" in again.stdout


def test_topics_create_with_replicas_says_when_the_cluster_has_too_few_brokers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

    fresh = Pipeline(bootstrap=kafka_bootstrap, workdir=tmp_path)  # no topics yet
    refused = fresh.cli("topics", "create", "--replication-factor", "3", check=False)
    assert refused.returncode == 1
    assert "with 3 replicas" in refused.stderr and "TRIGGERS_TOPIC_REPLICATION_FACTOR" in (
        refused.stderr.replace("\n", " ")
    )
    assert "Traceback" not in refused.stderr
    fresh.cli("topics", "create", "--replication-factor", "1")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    events = fresh.topic(topics.EVENTS)
    partitions = admin.list_topics(events, timeout=10).topics[events].partitions.values()
    assert [len(p.replicas) for p in partitions] == [1] * len(partitions)
    resource = ConfigResource(ConfigResource.Type.TOPIC, events)
    config = admin.describe_configs([resource])[resource].result(30)
    # One replica: nothing to relax, the topic sets no min.insync.replicas of its own.
    assert config["min.insync.replicas"].source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value


def test_apply_reports_created_then_unchanged_then_updated(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    first = pipeline.cli("apply", "-f", str(EXAMPLES))
    assert first.stdout.count("created") == 3
    second = pipeline.cli("apply", "-f", str(EXAMPLES))
    assert second.stdout.count("unchanged") == 3
    edited = tmp_path / "error-handler.yaml"
    edited.write_text(
        (EXAMPLES / "error-handler.yaml").read_text().replace("enabled: true", "enabled: false")
    )
    third = pipeline.cli("apply", "-f", str(edited))
    assert third.stdout.startswith("updated   Error Handler")
    listing = pipeline.cli("list", "-o", "json").stdout
    assert listing.count('"name"') == 3
    assert pipeline.cli("get", "Error Handler", "-o", "json").stdout.count('"enabled": false') == 1


def test_apply_of_an_invalid_file_fails_and_writes_nothing(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "trigger:\n  name: x\n  type: event\n  event:\n    patern: 'a.*'\n  agent: {id: a}\n"
    )
    result = pipeline.cli("apply", "-f", str(bad), check=False)
    assert result.returncode == 1
    assert f"{bad}:5: trigger.event.patern: unknown field; did you mean `pattern`?" in result.stderr
    assert pipeline.cli("list", "-o", "json").stdout.strip() == "[]"


def test_apply_takes_a_trailing_separator_and_refuses_one_trigger_twice_or_a_key_twice(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    one = "name: Once\ntype: event\nevent: {pattern: a.b}\nagent: {id: a}\n"
    tidy = tmp_path / "tidy.yaml"
    tidy.write_text(one + "---\n")  # as many editors and generators end a stream
    assert pipeline.cli("apply", "-f", str(tidy)).stdout.startswith("created   Once")
    twice = tmp_path / "twice.yaml"
    twice.write_text(one + "---\n" + one.replace("a.b", "c.d"))
    result = pipeline.cli("apply", "-f", str(twice), check=False)
    assert result.returncode == 1
    assert f"{twice} (document 2): trigger 'Once' (id " in result.stderr
    assert "is also defined by" in result.stderr
    keyed = tmp_path / "keyed.yaml"
    keyed.write_text(one.replace("{pattern: a.b}", "{pattern: a.b, pattern: e.f}"))
    result = pipeline.cli("apply", "-f", str(keyed), check=False)
    assert result.returncode == 1
    assert f"{keyed}:3: `pattern` is given twice in one mapping" in result.stderr
    named = tmp_path / "named.yaml"
    named.write_text("id: once-again\n" + one)  # another trigger, the same name
    result = pipeline.cli("apply", "-f", str(named), check=False)
    assert result.returncode == 1
    assert f"{named}: name: 'Once' is already the name of trigger " in result.stderr
    assert '"pattern": "a.b"' in pipeline.cli("get", "Once", "-o", "json").stdout  # untouched


def test_apply_reads_a_schedule_time_without_zone_as_utc_and_warns_of_a_past_one_shot(
    pipeline: Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TZ", "America/New_York")  # the CLI's machine is not on UTC
    later = tmp_path / "later.yaml"
    later.write_text(
        "name: Later\ntype: schedule\nschedule: {at: '2099-01-01T09:00:00'}\nagent: {id: a}\n"
    )
    applied = pipeline.cli("apply", "-f", str(later))
    assert "warning" not in applied.stderr
    status = pipeline.cli("status", "Later").stdout
    assert "next_fire_at: '2099-01-01T09:00:00Z'" in status, status  # UTC, whatever TZ says
    past = tmp_path / "past.yaml"
    past.write_text(later.read_text().replace("2099", "2020").replace("Later", "Past"))
    warned = pipeline.cli("apply", "-f", str(past))
    assert "schedule.at: 2020-01-01T09:00:00+00:00 has passed, so this one-shot never" in (
        warned.stderr
    )


def test_delete_enable_disable(pipeline: Pipeline) -> None:
    pipeline.cli("apply", "-f", str(EXAMPLES / "daily-sales-report.yaml"))
    pipeline.cli("disable", "Daily Sales Report")
    assert '"enabled": false' in pipeline.cli("get", "Daily Sales Report", "-o", "json").stdout
    pipeline.cli("enable", "Daily Sales Report")
    assert '"enabled": true' in pipeline.cli("get", "Daily Sales Report", "-o", "json").stdout
    pipeline.cli("delete", "Daily Sales Report")
    missing = pipeline.cli("get", "Daily Sales Report", check=False)
    assert missing.returncode == 1 and "no trigger with id or name" in missing.stderr


def test_serve_answers_health_readiness_and_metrics(pipeline: Pipeline) -> None:
    port = free_port()
    pipeline.start("serve", "--port", str(port), name="serve")
    deadline = time.monotonic() + 30
    while True:
        try:
            status, body = get(f"http://127.0.0.1:{port}/healthz")
            break
        except urllib.error.URLError:
            assert time.monotonic() < deadline, pipeline.log("serve")
            time.sleep(0.2)
    assert (status, orjson.loads(body)) == (200, {"status": "ok"})
    while get(f"http://127.0.0.1:{port}/readyz")[0] != 200:  # 503 until definitions are loaded
        assert time.monotonic() < deadline, pipeline.log("serve")
        time.sleep(0.2)
    status, metrics = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert 'triggers_http_requests_total{route="/healthz",status="200"} 1.0' in metrics


def test_worker_exposes_prometheus_metrics(pipeline: Pipeline) -> None:
    port = free_port()
    pipeline.start("worker", name="worker", extra_env={"TRIGGERS_WORKER_METRICS_PORT": str(port)})
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    pipeline.emit({"type": "anything", "source": "x"})
    deadline = time.monotonic() + 30
    while True:
        status, metrics = get(f"http://127.0.0.1:{port}/metrics")
        if 'triggers_events_total{outcome="no_fire"} 1.0' in metrics:
            break
        assert time.monotonic() < deadline, metrics[-2000:]
        time.sleep(0.3)
    assert status == 200


def test_worker_stops_cleanly_on_sigterm(pipeline: Pipeline) -> None:
    worker = pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "dispatcher restored")
    assert pipeline.stop(worker) == 0
    assert "dispatcher stopped" in pipeline.log("worker")


def test_apply_dry_run_writes_nothing_and_prune_deletes_what_files_omit(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    dry = pipeline.cli("apply", "-f", str(EXAMPLES), "--dry-run")
    assert dry.stdout.count("created") == 3 and "(dry run)" in dry.stdout
    assert pipeline.cli("list", "-o", "json").stdout.strip() == "[]"
    pipeline.cli("apply", "-f", str(EXAMPLES))
    only_one = tmp_path / "only"
    only_one.mkdir()
    (only_one / "report.yaml").write_text((EXAMPLES / "daily-sales-report.yaml").read_text())
    pruned = pipeline.cli("apply", "-f", str(only_one), "--prune")
    lines = sorted(line.split()[0] for line in pruned.stdout.splitlines())
    assert lines == ["deleted", "deleted", "unchanged"]
    assert "Error Handler" in pruned.stdout and "Slack Command Handler" in pruned.stdout
    remaining = pipeline.cli("list", "-o", "json").stdout
    assert "Daily Sales Report" in remaining and "Error Handler" not in remaining


def test_apply_refuses_an_endpoint_another_trigger_uses(pipeline: Pipeline, tmp_path: Path) -> None:
    pipeline.cli("apply", "-f", str(EXAMPLES / "slack-command-handler.yaml"))
    copy = tmp_path / "copy.yaml"
    copy.write_text(
        (EXAMPLES / "slack-command-handler.yaml")
        .read_text()
        .replace("Slack Command Handler", "Copy")
    )
    result = pipeline.cli("apply", "-f", str(copy), check=False)
    assert result.returncode == 1
    assert (
        "POST /webhooks/slack/commands is already used by trigger 'Slack Command Handler'"
        in result.stderr
    )
