"""The worker's dispatcher in a child process: an interpreter, and so a core, of its own.

The event matcher and the dispatcher share nothing but Kafka. As threads of one process
they take turns holding Python's one lock: in `bench/event_path.py` the worker's process
sat at 100% of a core while the broker had cycles to spare. So by default `triggers
worker` starts `triggers dispatcher` as a child and answers for it:

- it dies with the worker (`PR_SET_PDEATHSIG`: a SIGKILLed worker leaves no orphan that
  keeps dispatching) and stops with it (SIGTERM, then SIGKILL after 30 s);
- a child that exits on its own stops the worker, which an orchestrator then restarts,
  as it would for a dead loop thread;
- its metrics are the worker's: it writes them through prometheus_client's
  multiprocess files in a directory of the worker's, and the worker's `/metrics` adds
  them to its own (`merged`), series by series;
- the worker is ready (`/readyz`) once the child's dispatcher has polled Kafka.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample

log = logging.getLogger(__name__)
STOP_SECONDS = 30.0
CHILD_COMMAND = (sys.executable, "-P", "-m", "processor.cli.main")
"""The CLI in this interpreter. `-P`: `processor` is this installation's, never a
directory of that name where the worker was started (without it, a benchmark's worker
of an older checkout ran its dispatcher from the newer one it was started in)."""
_PR_SET_PDEATHSIG = 1
_SUMMED = {"counter", "histogram", "summary"}


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class DispatcherProcess:
    """`triggers dispatcher` as this worker's child (start it from the main thread: the
    child's death signal follows the thread that started it)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        """Under the worker's claimed data directory: what a killed worker's child left
        there is cleared by the next start, not left behind in /tmp."""
        self.metrics_directory = directory / "metrics"
        self.ready_file = directory / "ready"
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()

    def start(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        self.metrics_directory.mkdir(parents=True)
        env = {
            **os.environ,
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_directory),
            "TRIGGERS_WORKER_METRICS_PORT": "0",  # the worker serves its metrics
        }
        command = [*CHILD_COMMAND, "dispatcher", "--ready-file", str(self.ready_file)]
        preexec = _die_with_parent if sys.platform == "linux" else None
        # A process group of its own: Ctrl-C reaches the worker, which stops the child.
        self.process = subprocess.Popen(command, env=env, preexec_fn=preexec, process_group=0)
        log.info("dispatcher process %d started", self.process.pid)
        threading.Thread(target=self._watch, name="dispatcher-process", daemon=True).start()

    def _watch(self) -> None:
        assert self.process is not None
        code = self.process.wait()
        if not self._stopping.is_set():
            log.error("the dispatcher process exited (%s); the worker stops", code)
            os.kill(os.getpid(), signal.SIGTERM)

    def ready(self) -> bool:
        return self.process is not None and self.process.poll() is None and self.ready_file.exists()

    def metrics(self) -> Iterable[Metric]:
        registry = CollectorRegistry(auto_describe=False)
        MultiProcessCollector(registry, str(self.metrics_directory))  # type: ignore[no-untyped-call]
        return registry.collect()

    def stop(self) -> None:
        self._stopping.set()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                log.warning("the dispatcher process did not stop in %d s; killed", STOP_SECONDS)
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def merged(*sources: Iterable[Metric]) -> list[Metric]:
    """Metric families of several processes as one page: a series both have is summed
    (counters, histograms, summaries: each process counted its own), or the larger kept
    (a gauge); any other series is kept as it is."""
    families: dict[str, Metric] = {}
    for source in sources:
        for family in source:
            known = families.get(family.name)
            if known is None:
                copy = Metric(family.name, family.documentation, family.type, family.unit)
                copy.samples = list(family.samples)
                families[family.name] = copy
                continue
            where = {_series(s): n for n, s in enumerate(known.samples)}
            for sample in family.samples:
                n = where.get(_series(sample))
                if n is None:
                    known.samples.append(sample)
                    continue
                mine = known.samples[n]
                if sample.name.endswith("_created"):
                    value = min(mine.value, sample.value)
                elif known.type in _SUMMED:
                    value = mine.value + sample.value
                else:
                    value = max(mine.value, sample.value)
                known.samples[n] = mine._replace(value=value)
    return list(families.values())


def _series(sample: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
    return sample.name, tuple(sorted(sample.labels.items()))
