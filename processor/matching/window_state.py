"""Window state of the partitions a worker owns: a write-behind cache over its changelog.

Every (trigger, group) key of `trigger-matches` partition p has its state here, in
memory, under p. Matches and ticks change it (stateful.py decides); each changed key is
written to the compacted `trigger-window-state` topic once per checkpoint, in the same
transaction as the fires it caused and the input offsets, so a new owner of p that
reads partition p of that topic `read_committed` has exactly the state that goes with
the committed offsets: no fire is lost or made twice by a crash in between.

    key   = b"<trigger id>\\x1f<group>"            (the key of the match)
    value = {"state": {...}, "deadline": <epoch seconds or null>}   (null value: gone)

This module owns that encoding; `triggers explain` and the chaos verifier read through
`decode`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import orjson

from processor.definitions.registry import Registry
from processor.matching.events import Matched
from processor.matching.stateful import evaluate, new_state, on_tick
from processor.messages import Fire

MAX_STATE_BYTES = 512 * 1024
"""A key's state record must stay well under the broker's 1 MiB record limit."""


def encode(state: dict[str, Any], deadline: float | None) -> bytes:
    return orjson.dumps({"state": state, "deadline": deadline})


def decode(value: bytes) -> tuple[dict[str, Any], float | None]:
    found = orjson.loads(value)
    return found["state"], found.get("deadline")


@dataclass
class Oversized:
    """A key whose state grew past MAX_STATE_BYTES: it was started afresh."""

    key: str
    size: int


@dataclass
class WindowPartitions:
    states: dict[int, dict[str, dict[str, Any]]] = field(default_factory=dict)
    deadlines: dict[int, dict[str, float]] = field(default_factory=dict)
    dirty: dict[int, set[str]] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    """Window outcomes since the last `take_outcomes` (counted, fired, duplicate, ...)."""

    def load(self, partition: int, key: str, value: bytes | None) -> None:
        """Apply one changelog record (restore)."""
        states = self.states.setdefault(partition, {})
        deadlines = self.deadlines.setdefault(partition, {})
        if value is None:
            states.pop(key, None)
            deadlines.pop(key, None)
            return
        state, deadline = decode(value)
        states[key] = state
        if deadline is None:
            deadlines.pop(key, None)
        else:
            deadlines[key] = deadline

    def drop(self, partitions: list[int] | None) -> None:
        """Forget partitions this worker no longer owns (None: all)."""
        for partition in list(self.states) if partitions is None else partitions:
            self.states.pop(partition, None)
            self.deadlines.pop(partition, None)
            self.dirty.pop(partition, None)

    def observe(self, registry: Registry, partition: int, match: Matched, now: float) -> list[Fire]:
        """A match for a key: its state changes, and maybe a trigger fires."""
        key = f"{match.trigger_id}\x1f{match.group}"
        trigger = registry.get(match.trigger_id)
        if trigger is None:
            return []
        states = self.states.setdefault(partition, {})
        state = states.get(key) or new_state(trigger)
        evaluation = evaluate(registry, state, match, now)
        if evaluation.outcome is None:
            return []
        self.outcomes[evaluation.outcome] += 1
        states[key] = state
        self._deadline(partition, key, evaluation.deadline)
        return evaluation.fires

    def expire(self, registry: Registry, now: float) -> list[Fire]:
        """Time passed: absence and debounce keys whose deadline came fire."""
        fires: list[Fire] = []
        for partition, deadlines in self.deadlines.items():
            for key, deadline in list(deadlines.items()):
                if deadline > now:
                    continue
                state = self.states.get(partition, {}).get(key)
                if state is None:
                    self._deadline(partition, key, None)
                    continue
                trigger_id, _, group = key.partition("\x1f")
                evaluation = on_tick(registry, trigger_id, group, state, now)
                self._deadline(partition, key, evaluation.deadline)
                self.outcomes["fired"] += len(evaluation.fires)
                fires += evaluation.fires
        return fires

    def changelog(self) -> tuple[list[tuple[int, bytes, bytes | None]], list[Oversized]]:
        """The record of each key changed since the last call (partition, key, value),
        and the keys whose state had outgrown MAX_STATE_BYTES: those start afresh (their
        record is a tombstone) rather than write what the broker would refuse."""
        records: list[tuple[int, bytes, bytes | None]] = []
        oversized = []
        for partition, keys in self.dirty.items():
            states = self.states.get(partition, {})
            deadlines = self.deadlines.get(partition, {})
            for key in keys:
                state = states.get(key)
                if state is None:
                    continue
                value: bytes | None = encode(state, deadlines.get(key))
                if value is not None and len(value) > MAX_STATE_BYTES:
                    oversized.append(Oversized(key, len(value)))
                    del states[key]
                    deadlines.pop(key, None)
                    value = None
                records.append((partition, key.encode(), value))
        self.dirty = {}
        return records, oversized

    def take_outcomes(self) -> Counter[str]:
        taken, self.outcomes = self.outcomes, Counter()
        return taken

    def _deadline(self, partition: int, key: str, deadline: float | None) -> None:
        self.dirty.setdefault(partition, set()).add(key)
        deadlines = self.deadlines.setdefault(partition, {})
        if deadline is None:
            deadlines.pop(key, None)
        else:
            deadlines[key] = deadline
