"""The operations kit: alert rules (tested by promtool), the Grafana dashboard, the
docker-compose file, and that every series they read is one the product exposes."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from typing import Any

import httpx
import pytest
import yaml

from tests.integration.kafka import ROOT, Pipeline, start_serve

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    assert targets == {"worker:9464", "serve:8080", f"runner:{runner_port}"}
    for name in ("prometheus", "grafana"):
        for mount in services[name]["volumes"]:
            source = mount.split(":")[0]
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repo"
    # The rule file Prometheus is told to load is the one mounted.
    [rules] = scrape["rule_files"]
    assert any(m.endswith(f":{rules}:ro") for m in services["prometheus"]["volumes"])
