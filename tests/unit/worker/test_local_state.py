from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.worker import local_state
from processor.worker.local_state import LocalWindowStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[LocalWindowStore]:
    found = LocalWindowStore(tmp_path / "window-state")
    yield found
    found.close()


def test_records_of_a_partition_and_the_offset_they_reach(store: LocalWindowStore) -> None:
    store.write([(0, b"a", b"1"), (1, b"a", b"2"), (0, b"b", b"3")], {0: 7, 1: 4})
    store.write([(0, b"b", None)], {0: 9})  # a tombstone deletes
    assert list(store.records(0)) == [(b"a", b"1")]
    assert list(store.records(1)) == [(b"a", b"2")]
    assert (store.position(0, 0, 20), store.position(1, 0, 20)) == (9, 4)
    assert not store.has(2) and store.position(2, 0, 20) is None


def test_a_copy_outside_the_topic_or_too_old_is_not_used(
    store: LocalWindowStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write([(0, b"a", b"1")], {0: 9})
    assert store.position(0, 10, 20) is None  # truncated past it
    assert store.position(0, 0, 5) is None  # recreated: fewer records than it reached
    assert store.position(0, 0, 9) == 9
    later = time.time() + local_state.LOCAL_STATE_MAX_AGE + 1
    monkeypatch.setattr(local_state.time, "time", lambda: later)
    assert store.position(0, 0, 9) is None


def test_clear_drops_one_partition_only_and_the_store_reopens(tmp_path: Path) -> None:
    store = LocalWindowStore(tmp_path / "s")
    store.write([(3, b"k", b"v"), (4, b"k", b"w")], {3: 1, 4: 1})
    store.clear(3)
    store.close()
    again = LocalWindowStore(tmp_path / "s")
    assert not again.has(3) and list(again.records(3)) == []
    assert list(again.records(4)) == [(b"k", b"w")]
    again.close()
