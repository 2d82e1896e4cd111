"""The operations kit: alert rules (tested by promtool), the Grafana dashboard, the
docker-compose file, and that every series they read is one the product exposes."""

from __future__ import annotations

import json
import re
import subprocess
import time
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.kafka import ROOT, Pipeline, free_port, start_serve

PROMTOOL = ROOT / ".tools" / "bin" / "promtool"
PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "triggers.json"
COMPOSE = ROOT / "docker-compose.yml"
SERIES = re.compile(r"\btriggers_[a-z_]+")
SUFFIXES = ("_bucket", "_count", "_sum")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL} is missing: `make tools` builds it (make test does)")
    return subprocess.run(
        [str(PROMTOOL), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )


def test_every_alert_rule_passes_its_promtool_tests() -> None:
    checked = promtool("check", "rules", "alerts.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = promtool("test", "rules", "alerts_test.yml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())["groups"][0]["rules"]
    tests = (PROMETHEUS / "alerts_test.yml").read_text()
    untested = [r["alert"] for r in rules if f"alertname: {r['alert']}" not in tests]
    assert untested == []


def used_series() -> set[str]:
    """The product's series the dashboard and the rules read (histograms by family)."""
    texts = [(PROMETHEUS / "alerts.yml").read_text()]
    dashboard = json.loads(DASHBOARD.read_text())
    texts += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = set()
    for name in SERIES.findall("\n".join(texts)):
        for suffix in SUFFIXES:
            if name.endswith(suffix):
                name = name.removesuffix(suffix)
        names.add(name)
    return names


def exposed(text: str) -> set[str]:
    """Metric families in a /metrics page (a counter's without `_total`, as its TYPE says)."""
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def test_every_series_the_dashboard_and_the_rules_read_is_exposed(pipeline: Pipeline) -> None:
    port = free_port()
    pipeline.start("worker", name="worker", extra_env={"TRIGGERS_WORKER_METRICS_PORT": str(port)})
    base = start_serve(pipeline)
    pipeline.wait_ready("worker", "[^Worker]: Ready")
    deadline = time.monotonic() + 30
    while True:
        try:
            worker = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.5)
    served = httpx.get(f"{base}/metrics", timeout=10).text
    names = exposed(worker) | exposed(served)
    missing = sorted(
        n for n in used_series() if n not in names and n.removesuffix("_total") not in names
    )
    assert missing == [], f"read by the dashboard or the rules, exposed by nobody: {missing}"
    assert {"triggers_consumer_lag", "triggers_webhook_requests_total"} <= used_series()


def test_the_dashboard_has_a_panel_for_each_thing_operators_watch() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " | ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in (
        "events in",
        "fires",
        "executions",
        "dispatch latency",
        "consumer lag",
        "dead letters",
        "schedule lateness",
        "webhook answers",
        "circuit breakers",
    ):
        assert topic in titles, topic
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_compose_file_keeps_state_probes_health_and_wires_prometheus_and_grafana() -> None:
    compose: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    services = compose["services"]
    worker = services["worker"]
    data_dir = worker["environment"]["TRIGGERS_DATA_DIR"]
    assert f"worker-data:{data_dir}" in worker["volumes"] and "worker-data" in compose["volumes"]
    assert "/healthz" in " ".join(worker["healthcheck"]["test"])
    assert "/readyz" in " ".join(services["serve"]["healthcheck"]["test"])
    # Metrics listen beyond the container, on the ports Prometheus scrapes.
    assert services["worker"]["environment"]["TRIGGERS_HTTP_HOST"] == "0.0.0.0"
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    targets = {
        t for job in scrape["scrape_configs"] for c in job["static_configs"] for t in c["targets"]
    }
    runner_port = services["runner"]["environment"]["TRIGGERS_RUNNER_METRICS_PORT"]
    assert targets == {"worker:9464", "dispatcher:9464", "serve:8080", f"runner:{runner_port}"}
    # The dispatcher's own container (the `split` profile) is probed like the worker.
    assert services["dispatcher"]["command"] == ["dispatcher"]
    assert services["dispatcher"]["profiles"] == ["split"]
    assert "/healthz" in " ".join(services["dispatcher"]["healthcheck"]["test"])
    for name in ("prometheus", "grafana"):
        for mount in services[name]["volumes"]:
            source = mount.split(":")[0]
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
    # The rule file Prometheus is told to load is the one mounted.
    [rules] = scrape["rule_files"]
    assert any(m.endswith(f":{rules}:ro") for m in services["prometheus"]["volumes"])


CHART = ROOT / "deploy" / "helm" / "kafka-agent-triggers"
HELM = ROOT / ".tools" / "bin" / "helm"
VALIDATE = ROOT / ".tools" / "bin" / "validate-manifests"
SECURED_VALUES = [
    "--set",
    "kafka.securityProtocol=SASL_SSL,kafka.credentialsSecret=kafka-credentials,"
    "kafka.caSecret=kafka-ca,apiKeysSecret=api-keys,envFromSecrets[0]=webhook-secrets",
]


def rendered(*values: str) -> str:
    for tool in (HELM, VALIDATE):
        if not tool.exists():
            pytest.fail(f"{tool} is missing: `make tools` builds it (make test does)")
    template = subprocess.run(
        [str(HELM), "template", "triggers", str(CHART), *values],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert template.returncode == 0, template.stderr
    return template.stdout


SPLIT_VALUES = ["--set", "dispatcher.replicas=2"]


@pytest.mark.parametrize(
    "values", [[], SECURED_VALUES, SPLIT_VALUES], ids=["defaults", "secured", "split"]
)
def test_the_helm_chart_lints_and_renders_valid_kubernetes_objects(values: list[str]) -> None:
    lint = subprocess.run(
        [str(HELM), "lint", "--strict", str(CHART), *values],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    manifests = rendered(*values)
    checked = subprocess.run(
        [str(VALIDATE)], input=manifests, capture_output=True, text=True, timeout=120
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    documents = [d for d in yaml.safe_load_all(manifests) if d]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    assert {
        ("StatefulSet", "triggers-worker"),
        ("PodDisruptionBudget", "triggers-worker"),
        ("Deployment", "triggers-serve"),
        ("Service", "triggers-serve"),
        ("Deployment", "triggers-runner"),
        ("Job", "triggers-topics"),
    } <= kinds
    [worker] = [d for d in documents if d["kind"] == "StatefulSet"]
    container = worker["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]
    assert worker["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    dispatchers = [d for d in documents if d["metadata"]["name"] == "triggers-dispatcher"]
    worker_env = {e["name"]: e.get("value") for e in container["env"]}
    if values is SPLIT_VALUES:  # the dispatcher in its own pods, and the workers leave it
        [dispatcher] = dispatchers
        assert dispatcher["spec"]["replicas"] == 2
        assert dispatcher["spec"]["template"]["spec"]["containers"][0]["args"] == ["dispatcher"]
        assert worker_env["TRIGGERS_WORKER_DISPATCHER"] == "false"
    else:
        assert dispatchers == [] and "TRIGGERS_WORKER_DISPATCHER" not in worker_env


def test_the_chart_sets_only_settings_the_product_has_and_secrets_come_from_secrets() -> None:
    from processor.config import Settings

    known = {f"TRIGGERS_{name.upper()}" for name in Settings.model_fields}
    manifests = rendered(*SECURED_VALUES)
    used = set(re.findall(r"\bTRIGGERS_[A-Z_]+\b", manifests))
    assert used - known == set()
    for document in yaml.safe_load_all(manifests):
        for container in _containers(document):
            env = {e["name"]: e for e in container.get("env", [])}
            for secret in ("TRIGGERS_KAFKA_SASL_PASSWORD", "TRIGGERS_API_KEYS"):
                if secret in env:
                    assert "secretKeyRef" in env[secret]["valueFrom"], secret


def _containers(document: Any) -> list[dict[str, Any]]:
    if not document or document["kind"] not in ("Deployment", "StatefulSet", "Job"):
        return []
    return list(document["spec"]["template"]["spec"]["containers"])
