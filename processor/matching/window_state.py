"""Window state of the partitions a worker owns: a write-behind cache over its changelog.

Every (trigger, group) key of `trigger-matches` partition p has its state here, in
memory, under p. Matches and ticks change it (stateful.py decides); each changed key is
written to the compacted `trigger-window-state` topic once per checkpoint, in the same
transaction as the fires it caused and the input offsets, so a new owner of p that
reads partition p of that topic `read_committed` has exactly the state that goes with
the committed offsets: no fire is lost or made twice by a crash in between. The records,
their keys and their encoding are state.py's.
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from processor.definitions.registry import Registry
from processor.matching.events import Matched
from processor.matching.fires import EncodedFire, encoded
from processor.matching.state import (
    SEPARATOR,
    WINDOW_RECORD,
    KeyState,
    StateKey,
    decode,
    encode,
    is_window_record,
)
from processor.matching.stateful import Evaluation, evaluate_all, kept_for, on_tick
from processor.messages import Fire

MAX_STATE_BYTES = 768 * 1024
"""A key's state record must stay well under the broker's 1 MiB record limit. A window
of windows.MAX_PENDING events (each its time, a key of at most 48 characters and an
aggregated value: about 107 bytes), the ids of MAX_CONSUMED counted ones and the
summaries of the newest SAMPLE_KEPT (a few KiB each) comes to about 710 KiB."""
FORGET_BUDGET = 1_000
"""Most keys a partition has looked at per `forget_idle` (once a second): a million keys
of six partitions that went idle together are forgotten in three minutes, each second
costing the matcher about 1.5 µs a key (and as much again for its tombstone)."""


DUE_SLACK = 1_024
"""Entries a partition's heap of deadlines may hold beyond twice its keys' before it is
made again (each debounced event moves its key's deadline, leaving an entry behind)."""


@dataclass
class IdleKeys:
    """When each key of one partition was last reached by an event, oldest first, so
    that forgetting the idle ones costs what it forgets, not what it keeps. A key its
    trigger keeps longer than the floor waits in `later`, a heap by when it may go."""

    last: dict[StateKey, float] = field(default_factory=dict)
    later: list[tuple[float, float, StateKey]] = field(default_factory=list)
    """(may go at, last reached, key); an entry is current while `waiting` has it."""
    waiting: dict[StateKey, float] = field(default_factory=dict)
    """Key -> last reached, for the keys in `later` (not in `last`)."""
    restored_at: float | None = None
    """When the partition's keys were restored: those no event has reached since (in
    neither `last` nor `waiting`) count as reached then."""
    restored: list[StateKey] | None = None
    """Those keys, listed once their idle time may have come and looked at a budget at
    a time: nothing is made per key at the restore itself (a dict of a million keys'
    times, made then, kept ~350 MB of the restore's freed memory resident)."""

    def reached(self, key: StateKey, now: float) -> None:
        last = self.last
        if last.pop(key, None) is None and self.waiting:
            self.waiting.pop(key, None)
        last[key] = now


@dataclass
class Oversized:
    """A key whose state grew past MAX_STATE_BYTES: it was started afresh."""

    key: StateKey
    size: int


@dataclass
class WindowPartitions:
    states: dict[int, dict[StateKey, KeyState | bytes]] = field(default_factory=dict)
    """Per partition, each key's state; a window's as its restored record until the key
    is used (`state`): a million restored keys take a quarter of the memory and of the
    time that way."""
    deadlines: dict[int, dict[StateKey, float]] = field(default_factory=dict)
    """Per partition, when each key with an absence or debounce to come next has work."""
    due: dict[int, list[tuple[float, StateKey]]] = field(default_factory=dict)
    """Per partition, a heap of (deadline, key), so that a tick costs what is due, not a
    pass over every key with a deadline (a million took 0.3 s, every second); an entry
    is current while `deadlines` has it. Made from `deadlines` when missing (a restore)."""
    dirty: dict[int, set[StateKey]] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    """Window outcomes since the last `take_outcomes` (counted, fired, duplicate, ...)."""
    idle: dict[int, IdleKeys] = field(default_factory=dict)
    """Per partition, when each key was last reached (what `forget_idle` reads)."""
    forgotten: dict[int, set[StateKey]] = field(default_factory=dict)
    """Keys forgotten since the last `changelog`: their records become tombstones."""
    max_ahead: float | None = None
    """TRIGGERS_EVENT_TIME_MAX_AHEAD_SECONDS: a window holding an event further ahead of
    the clock (taken before the matcher refused such events) lets it go (`evaluate_all`)."""

    def load(self, partition: int, record_key: bytes, value: bytes | None) -> None:
        """Apply one changelog record (restore)."""
        key = StateKey.parse(record_key)
        states = self.states.setdefault(partition, {})
        deadlines = self.deadlines.setdefault(partition, {})
        if self.due:  # made again from `deadlines` (a restore has none yet)
            self.due.pop(partition, None)
        if value is None:
            states.pop(key, None)
            deadlines.pop(key, None)
            return
        if is_window_record(value):
            states[key] = value
            deadlines.pop(key, None)
            return
        state, deadline = decode(value)
        states[key] = state
        if deadline is None:
            deadlines.pop(key, None)
        else:
            deadlines[key] = deadline

    def load_all(self, partition: int, records: Iterable[tuple[bytes, bytes | None]]) -> int:
        """`load` for each of a partition's records in their order (how many): a restore
        loads a million, and a window's record (most of them) is kept with its key
        parsed and nothing else (0.6x `load`'s time)."""
        states = self.states.setdefault(partition, {})
        deadlines = self.deadlines.setdefault(partition, {})
        make, separator = StateKey._make, SEPARATOR
        count = 0
        for record_key, value in records:
            count += 1
            if value is not None and value.startswith(WINDOW_RECORD):
                key = make(record_key.decode().partition(separator)[::2])
                states[key] = value
                if deadlines:
                    deadlines.pop(key, None)
            else:
                self.load(partition, record_key, value)
        return count

    def state(self, partition: int, key: StateKey) -> KeyState | None:
        """The key's state (a restored record is read here, once)."""
        return _read(self.states.get(partition, {}), key)

    def restored(self, partitions: list[int], now: float) -> None:
        """The keys just restored for these partitions count as reached `now`: a new
        owner gives each a whole idle time, whatever its last owner saw. Their deadlines
        are put in order here, before the first events, not in the loop's first tick."""
        for partition in partitions:
            self.idle[partition] = IdleKeys(restored_at=now)
            self._due(partition)

    def _due(self, partition: int) -> list[tuple[float, StateKey]]:
        """The partition's heap of deadlines, made from `deadlines` if it has none."""
        heap = self.due.get(partition)
        if heap is None:
            deadlines = self.deadlines.get(partition, {})
            heap = self.due[partition] = [(at, key) for key, at in deadlines.items()]
            heapq.heapify(heap)
        return heap

    def drop(self, partitions: list[int] | None) -> None:
        """Forget partitions this worker no longer owns (None: all)."""
        for partition in list(self.states) if partitions is None else partitions:
            self.states.pop(partition, None)
            self.deadlines.pop(partition, None)
            self.due.pop(partition, None)
            self.dirty.pop(partition, None)
            self.idle.pop(partition, None)
            self.forgotten.pop(partition, None)

    def observe(
        self,
        registry: Registry,
        partition: int,
        match: Matched,
        now: float,
        key: StateKey | None = None,
    ) -> list[Fire]:
        """A match for a key (`key`: its StateKey, if the caller has it): its state
        changes, and maybe a trigger fires."""
        if key is None:
            key = StateKey(match.trigger_id, match.group)
        return self.observe_all(registry, partition, key, [match], now)

    def observe_all(
        self, registry: Registry, partition: int, key: StateKey, matches: list[Matched], now: float
    ) -> list[Fire]:
        """A key's matches in their order, as `observe` takes them one by one."""
        return self._observe(registry, partition, key, matches, now, False).fires

    def observe_encoded(
        self, registry: Registry, partition: int, key: StateKey, matches: list[Matched], now: float
    ) -> list[EncodedFire]:
        """`observe_all`, its fires as the matcher writes them."""
        evaluation = self._observe(registry, partition, key, matches, now, True)
        return [*evaluation.encoded, *map(encoded, evaluation.fires)]

    def _observe(
        self,
        registry: Registry,
        partition: int,
        key: StateKey,
        matches: list[Matched],
        now: float,
        encode: bool,
    ) -> Evaluation:
        states = self.states.setdefault(partition, {})
        evaluation = evaluate_all(
            registry, _read(states, key), matches, now, self.outcomes, encode, self.max_ahead
        )
        if evaluation.outcome is None or evaluation.state is None:
            return Evaluation(None)
        states[key] = evaluation.state
        self._deadline(partition, key, evaluation.deadline)
        idle = self.idle.get(partition)
        if idle is None:
            idle = self.idle[partition] = IdleKeys()
        idle.reached(key, now)
        return evaluation

    def expire(self, registry: Registry, now: float) -> list[Fire]:
        """Time passed: absence and debounce keys whose deadline came fire."""
        fires: list[Fire] = []
        for partition, deadlines in self.deadlines.items():
            heap = self._due(partition)
            keys = []
            while heap and heap[0][0] <= now:
                deadline, key = heapq.heappop(heap)
                if deadlines.get(key) == deadline:  # else moved or gone since
                    del deadlines[key]
                    keys.append(key)
            for key in keys:
                state = self.state(partition, key)
                if state is None:
                    self._deadline(partition, key, None)
                    continue
                evaluation = on_tick(registry, key.trigger_id, key.group, state, now)
                self._deadline(partition, key, evaluation.deadline)
                self.outcomes["fired"] += len(evaluation.fires)
                fires += evaluation.fires
        return fires

    def forget_idle(
        self, registry: Registry, now: float, floor: float, budget: int = FORGET_BUDGET
    ) -> int:
        """Forget the keys no event has reached for as long as their trigger keeps them
        (`kept_for`: at least `floor` seconds of the worker's clock), unless a deadline
        (absence, debounce) is still to come; the next `changelog` writes their
        tombstones. Without it, a `group_by` over ever new values (a user id, a request
        id) would grow the state without end. How many were forgotten."""
        if floor <= 0:
            return 0
        forgotten = 0
        cutoff = now - floor

        def idle_long_enough(item: tuple[StateKey, float]) -> bool:
            return item[1] <= cutoff

        for partition, idle in self.idle.items():
            states = self.states.get(partition, {})
            deadlines = self.deadlines.get(partition, {})
            gone: list[StateKey] = []
            last, later, waiting = idle.last, idle.later, idle.waiting
            looked = 0
            if idle.restored_at is not None and idle.restored_at <= cutoff:
                if idle.restored is None:
                    idle.restored = list(states)
                restored, at = idle.restored, idle.restored_at
                while restored and looked < budget:
                    key = restored.pop()
                    looked += 1
                    if key in states and key not in last and key not in waiting:
                        self._forget_or_wait(registry, idle, key, at, now, floor, deadlines, gone)
                if not restored:
                    idle.restored_at = idle.restored = None
            due = list(
                itertools.takewhile(
                    idle_long_enough, itertools.islice(last.items(), budget - looked)
                )
            )
            looked += len(due)
            for key, at in due:
                del last[key]
                if key in states:
                    self._forget_or_wait(registry, idle, key, at, now, floor, deadlines, gone)
            if due and not last:
                idle.last = {}  # not a table of deleted slots that every sweep steps over
            while later and later[0][0] <= now and looked < budget:
                looked += 1
                _, at, key = heapq.heappop(later)
                if waiting.get(key) != at:
                    continue  # reached again since, or waiting under a later entry
                del waiting[key]
                if key in states:
                    self._forget_or_wait(registry, idle, key, at, now, floor, deadlines, gone)
            if gone:
                dirty = self.dirty.get(partition, set())
                for key in gone:
                    del states[key]
                    deadlines.pop(key, None)
                    dirty.discard(key)
                self.forgotten.setdefault(partition, set()).update(gone)
                forgotten += len(gone)
        return forgotten

    @staticmethod
    def _forget_or_wait(
        registry: Registry,
        idle: IdleKeys,
        key: StateKey,
        at: float,
        now: float,
        floor: float,
        deadlines: dict[StateKey, float],
        gone: list[StateKey],
    ) -> None:
        kept = kept_for(registry, key.trigger_id, floor)
        deadline = deadlines.get(key)
        if deadline is None:
            if now - at >= kept:
                gone.append(key)
                return
            may_go = at + kept
        else:  # looked at again a floor after its deadline (it may set another)
            may_go = max(at + kept, deadline + floor, now + floor)
        heapq.heappush(idle.later, (may_go, at, key))
        idle.waiting[key] = at

    def keys(self) -> int:
        """How many keys this worker holds state for."""
        return sum(len(states) for states in self.states.values())

    def changelog(self) -> tuple[list[tuple[int, bytes, bytes | None]], list[Oversized]]:
        """The record of each key changed since the last call (partition, key, value),
        and the keys whose state had outgrown MAX_STATE_BYTES: those start afresh (their
        record is a tombstone) rather than write what the broker would refuse."""
        records: list[tuple[int, bytes, bytes | None]] = []
        oversized = []
        for partition, forgotten in self.forgotten.items():
            states = self.states.get(partition, {})
            records += [(partition, k.encode(), None) for k in forgotten if k not in states]
        self.forgotten = {}
        for partition, keys in self.dirty.items():
            states = self.states.get(partition, {})
            deadlines = self.deadlines.get(partition, {})
            for key in keys:
                state = states.get(key)
                if state is None:
                    continue
                value: bytes | None = (
                    state if isinstance(state, bytes) else encode(state, deadlines.get(key))
                )
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

    def _deadline(self, partition: int, key: StateKey, deadline: float | None) -> None:
        self.dirty.setdefault(partition, set()).add(key)
        deadlines = self.deadlines.setdefault(partition, {})
        if deadline is None:
            deadlines.pop(key, None)
        elif deadlines.get(key) != deadline:
            deadlines[key] = deadline
            heap = self.due.get(partition)
            if heap is not None:
                if len(heap) > 2 * len(deadlines) + DUE_SLACK:  # mostly moved deadlines
                    self.due.pop(partition)  # made again at the next tick
                else:
                    heapq.heappush(heap, (deadline, key))


def _read(states: dict[StateKey, KeyState | bytes], key: StateKey) -> KeyState | None:
    found = states.get(key)
    if isinstance(found, bytes):
        found = states[key] = decode(found)[0]
    return found
