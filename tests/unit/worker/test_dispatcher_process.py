"""The worker's /metrics page with its dispatcher's process: one family a name, the
series both processes have added up."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from processor.worker.dispatcher_process import CHILD_COMMAND, merged


def _process() -> tuple[CollectorRegistry, Counter, Histogram, Gauge]:
    registry = CollectorRegistry()
    counter = Counter("t_events", "events", ["outcome"], registry=registry)
    histogram = Histogram("t_commit_seconds", "commits", ["loop"], registry=registry)
    gauge = Gauge("t_lag", "lag", registry=registry)
    return registry, counter, histogram, gauge


def test_series_of_both_processes_are_summed_and_each_name_appears_once() -> None:
    worker, events, commits, lag = _process()
    child, child_events, child_commits, child_lag = _process()
    events.labels("fired").inc(3)
    child_events.labels("fired").inc(4)
    child_events.labels("dead_letter").inc()
    commits.labels("event-matcher").observe(0.01)
    child_commits.labels("dispatcher").observe(0.2)
    lag.set(7)
    child_lag.set(2)

    families = merged(worker.collect(), child.collect())

    assert sorted(f.name for f in families) == ["t_commit_seconds", "t_events", "t_lag"]
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    assert values["t_events_total", (("outcome", "fired"),)] == 7
    assert values["t_events_total", (("outcome", "dead_letter"),)] == 1
    assert values["t_commit_seconds_count", (("loop", "event-matcher"),)] == 1
    assert values["t_commit_seconds_count", (("loop", "dispatcher"),)] == 1
    assert values["t_commit_seconds_sum", (("loop", "dispatcher"),)] == 0.2
    assert values["t_lag", ()] == 7  # a gauge is not summed


def test_the_merged_page_parses_as_prometheus_text() -> None:
    worker, events, _, _ = _process()
    child, child_events, _, _ = _process()
    events.labels("fired").inc()
    child_events.labels("fired").inc()

    class Families:
        def collect(self):  # type: ignore[no-untyped-def]
            return merged(worker.collect(), child.collect())

    page = CollectorRegistry(auto_describe=False)
    page.register(Families())
    text = generate_latest(page).decode()
    assert text.count("# TYPE t_events_total counter") == 1
    parsed = {f.name: f for f in text_string_to_metric_families(text)}
    fired = [s for s in parsed["t_events"].samples if s.name == "t_events_total"]
    assert [s.value for s in fired] == [2.0]


def test_the_child_runs_this_installation_whatever_directory_it_starts_in(tmp_path: Path) -> None:
    """A `processor` package in the worker's working directory is not what the child
    imports (it was, for a benchmark's worker of another checkout)."""
    impostor = tmp_path / "processor" / "cli"
    impostor.mkdir(parents=True)
    (tmp_path / "processor" / "__init__.py").write_text("")
    (impostor / "__init__.py").write_text("")
    (impostor / "main.py").write_text("print('the wrong processor')\n")
    found = subprocess.run(
        [*CHILD_COMMAND, "dispatcher", "--help"],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "the wrong processor" not in found.stdout
    assert "Run only the dispatcher" in found.stdout
