"""The window state's copy on the worker's own disk, so a restart reads only the tail of
`trigger-window-state` instead of all of it.

The changelog topic is the truth; this is a cache of it, in RocksDB (rocksdict, which
Faust's stores use too). After each committed transaction the matcher writes the state
records it just committed here, with, per partition, the changelog offset they reach,
in one atomic batch. At assignment a partition is restored from here up to that
offset, and from the topic after it:

    local store: p -> (keys, offset X)      trigger-window-state[p]: ...... X | tail ...
    restore(p) = local keys of p, then the tail from X, read_committed

Written only after a commit, the store never holds state the topic does not, and what
it lacks (a crash between the commit and the write) is in the tail. It is not used,
and is rewritten from the topic, when its offset is outside the partition's offsets
(the topic was recreated or truncated) or it is older than LOCAL_STATE_MAX_AGE: past
the topic's `delete.retention.ms` (24 h by default) a tombstone written after X may
have been compacted away, and the key it deleted would come back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import cast

from rocksdict import Options, Rdict, WriteBatch

log = logging.getLogger(__name__)

LOCAL_STATE_MAX_AGE = 12 * 3600.0
"""Seconds after which a partition's local copy is not trusted (half the topic's
default `delete.retention.ms`)."""
_KEYS = b"k"
_META = b"m"


def _key(partition: int, key: bytes) -> bytes:
    return _KEYS + partition.to_bytes(4, "big") + key


def _prefix(partition: int) -> bytes:
    return _KEYS + partition.to_bytes(4, "big")


def _meta(partition: int) -> bytes:
    return _META + partition.to_bytes(4, "big")


class LocalWindowStore:
    """One RocksDB database per worker (its directory is the worker's, see
    `data_dir_claimed`), keys prefixed by partition."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: Rdict | None = None

    @property
    def db(self) -> Rdict:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = Rdict(str(self.path), options=Options(raw_mode=True))
        return self._db

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def has(self, partition: int) -> bool:
        return self.db.get(_meta(partition)) is not None

    def position(self, partition: int, low: int, high: int) -> int | None:
        """The changelog offset the local copy of `partition` reaches, if it can be used
        with a partition whose offsets are `low`..`high`; None otherwise."""
        meta = self.db.get(_meta(partition))
        if meta is None:
            return None
        offset_text, _, written_text = meta.decode().partition(" ")
        offset, written = int(offset_text), float(written_text or 0)
        if not low <= offset <= high:
            log.info("local window state of partition %d is outside the topic; unused", partition)
            return None
        if time.time() - written > LOCAL_STATE_MAX_AGE:
            log.info("local window state of partition %d is too old; unused", partition)
            return None
        return offset

    def records(self, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """The (key, value) of every state of `partition`."""
        prefix, end = _prefix(partition), _prefix(partition + 1)
        skip = len(prefix)
        items = cast("Iterator[tuple[bytes, bytes]]", self.db.items(from_key=prefix))  # raw
        for key, value in items:
            if key >= end:
                return
            yield key[skip:], value

    def clear(self, partition: int) -> None:
        self.db.delete_range(_prefix(partition), _prefix(partition + 1))
        self.db.delete(_meta(partition))

    def write(
        self, records: Iterable[tuple[int, bytes, bytes | None]], positions: dict[int, int]
    ) -> None:
        """Apply committed changelog records (partition, key, value; None deletes) and
        the offset each partition's copy now reaches, atomically."""
        batch = WriteBatch(raw_mode=True)
        for partition, key, value in records:
            if value is None:
                batch.delete(_key(partition, key))
            else:
                batch.put(_key(partition, key), value)
        now = f" {time.time():.0f}"
        for partition, offset in positions.items():
            batch.put(_meta(partition), f"{offset}{now}".encode())
        if not batch.is_empty():
            self.db.write(batch)
