"""The Faust app as configured: which store each table is on, whose state directory, where
the definitions standby starts."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from faust import Event
from faust.stores.memory import Store as MemoryStore
from faust.types import TP, Message

from processor.config import Settings
from processor.worker.app import create_app, data_dir_claimed


def test_faust_keeps_only_the_low_volume_tables_in_memory(tmp_path: Path) -> None:
    """Window state lives in the event matcher's loop (window_state.py), not in Faust."""
    app = create_app(Settings(data_dir=tmp_path, app_id="unit"))
    assert set(app.tables) == {"trigger-definitions", "scheduler-state"}
    assert isinstance(app.tables["trigger-definitions"].data, MemoryStore)


def test_a_second_worker_on_the_same_state_directory_stops_with_advice(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, app_id="unit")
    with data_dir_claimed(settings):
        second = subprocess.run(
            [Path(sys.executable).parent / "triggers", "worker"],
            env={
                **os.environ,
                "TRIGGERS_DATA_DIR": str(tmp_path),
                "TRIGGERS_APP_ID": "unit",
                # Nothing listens here: the worker must stop before it tries the broker.
                "TRIGGERS_KAFKA_BOOTSTRAP": "127.0.0.1:1",
                "TRIGGERS_WORKER_METRICS_PORT": "0",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert second.returncode == 1
    message = " ".join(second.stderr.split())
    assert f"{tmp_path / 'unit'} is in use by another worker" in message
    assert "TRIGGERS_DATA_DIR" in message
    # Once the first lets go, the directory is free again.
    with data_dir_claimed(settings):
        pass


def test_definitions_standby_starts_where_recovery_ended(tmp_path: Path) -> None:
    """Faust recovers the global table's partition as active, then reads it again as a
    standby from the offset it had at assignment: with 100k triggers that second pass
    held the consumer for about a minute after Ready and events waited seconds behind it."""
    app = create_app(Settings(data_dir=tmp_path, app_id="unit"))
    table = app.tables["trigger-definitions"]
    tp = TP(table.changelog_topic.get_topic_name(), 0)
    recovery = app.tables.recovery
    recovery.add_standby(table, tp)
    recovery.add_active(table, tp)
    assert recovery.standby_offsets[tp] is None  # the memory store keeps no offset

    document = (
        b'{"trigger": {"name": "t", "type": "event", "agent": {"id": "a"},'
        b' "event": {"pattern": "order.*"}}}'
    )
    table.apply_changelog_batch(
        [_changelog_event(app, tp, offset, b"t%d" % offset, document) for offset in range(3)]
    )

    assert len(table.registry) == 3
    assert recovery.standby_offsets[tp] == 2


def _changelog_event(app: Any, tp: TP, offset: int, key: bytes, value: bytes) -> Event:
    message = Message(
        topic=tp.topic,
        partition=tp.partition,
        offset=offset,
        timestamp=0.0,
        timestamp_type=0,
        headers=[],
        key=key,
        value=value,
        checksum=None,
        tp=tp,
    )
    return Event(app, key, value, [], message)


def test_each_collection_is_timed_in_the_pause_metric() -> None:
    from processor.metrics import GC_PAUSES
    from processor.worker.app import time_gc_pauses

    def count() -> float:
        return sum(
            sample.value
            for metric in GC_PAUSES.collect()
            for sample in metric.samples
            if sample.name.endswith("_count") and sample.labels["generation"] == "2"
        )

    before = len(gc.callbacks)
    time_gc_pauses()
    try:
        seen = count()
        gc.collect()
        assert count() == seen + 1
    finally:
        del gc.callbacks[before:]


def test_young_collections_run_less_often_and_still_free_cycles() -> None:
    import weakref

    from processor.worker.app import GC_YOUNG_THRESHOLD, collect_less_often

    class Node:
        pass

    saved = gc.get_threshold()
    collect_less_often()
    try:
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, saved[1], saved[2])
        cycle = Node()
        cycle.self = cycle  # type: ignore[attr-defined]
        gone = weakref.ref(cycle)
        del cycle
        kept = [[] for _ in range(GC_YOUNG_THRESHOLD // 10)]  # fewer than the threshold
        assert gone() is not None
        kept += [[] for _ in range(GC_YOUNG_THRESHOLD)]  # past it: a collection runs
        assert gone() is None
    finally:
        gc.set_threshold(*saved)
