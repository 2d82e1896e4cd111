"""The event matcher: which triggers does a domain event fire? (Stateless hot path.)

For each candidate trigger (found through the pattern index) the verdict is one of
`Verdict`. A trigger without a threshold fires at once; one with a threshold forwards
the event to the window evaluator as a `Matched` (on the wire, a `WindowMatch`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, cast

import orjson

from processor.definitions.model import TriggerDocument
from processor.definitions.registry import SECOND_ROLE, Registry
from processor.language.conditions import (
    MISSING,
    Condition,
    Outcome,
    Threshold,
    bounded_group,
    field_reader,
    group_text,
)
from processor.matching.decode import ATTRIBUTES, Event, event_of, iso_time
from processor.matching.fires import EncodedFire, encoded_fire, map_paths, new_fire
from processor.matching.state import StateKey
from processor.messages import Cause, CauseKind, DomainEvent, Fire, WindowMatch, trusted

EVENT_DATA_MAX_BYTES = 65_536
"""Default bound on an event's `data` in a direct fire's input (TRIGGERS_EVENT_DATA_MAX_BYTES)."""
SAMPLE_DATA_MAX_BYTES = 4096
"""Bound on `data` of each event a stateful trigger keeps (window samples, the crossing
event, sequence steps): these live in window state, which must stay small."""
KEPT_ATTRIBUTES_MAX_CHARS = 16_384
"""Bound on all of them together (extensions past it are left out)."""
KEPT_ATTRIBUTE_MAX_CHARS = 1024
"""Bound on each other attribute of an event a stateful trigger keeps (a `subject` or an
extension of megabytes went whole into every match, state record and fire with it)."""
EVENT_KEY_MAX_CHARS = 48
"""An event's key (source and id: what dedupes it in window state) longer than this is
kept as a digest: a window keeps thousands, and a `source` may be a long URI."""


class Verdict(StrEnum):
    """Why a candidate trigger did or did not fire on an event."""

    FIRED = "fired"
    """Pattern, source and condition matched; no threshold: fired."""
    WINDOWED = "windowed"
    """Matched; handed to the stateful evaluator (threshold window, sequence, absence or
    debounce), which fires when its pattern completes."""
    SOURCE_MISMATCH = "source_mismatch"
    WORKSPACE_MISMATCH = "workspace_mismatch"
    CONDITION_FAILED = "condition_failed"
    KEY_MISSING = "key_missing"
    """A sequence, absence or debounce trigger's `key` field is not in the event."""


@dataclass(slots=True)
class Matched:
    """An event for a stateful trigger's window: what `WindowMatch` carries on
    `trigger-matches`, without building the message when it stays in this worker."""

    trigger_id: str
    group: str
    role: str
    event_key: str
    """source + id: what dedupes the event in its window (`event_key`)."""
    time: float
    """Event time, seconds since the epoch."""
    value: float | None
    event: dict[str, Any]
    """Bounded summary of the event."""

    def key(self) -> bytes:
        return StateKey(self.trigger_id, self.group).encode()

    def message(self) -> WindowMatch:
        return WindowMatch(
            trigger_id=self.trigger_id,
            group=self.group,
            role=self.role,
            event_key=self.event_key,
            time=self.time,
            value=self.value,
            event=self.event,
        )

    @classmethod
    def of(cls, message: WindowMatch) -> Matched:
        return cls(
            message.trigger_id,
            message.group,
            message.role,
            message.event_key,
            message.time,
            message.value,
            message.event,
        )


@dataclass(slots=True)
class Match:
    trigger: TriggerDocument
    trigger_id: str
    """The trigger's id (what `trigger.trigger_id` gives, without the call per event)."""
    verdict: Verdict
    fire: Fire | None = None
    window: Matched | None = None
    trace: Sequence[Outcome] = ()
    encoded: EncodedFire | None = None
    """With `match_event(encode=True)`, the fire as JSON (`fire` is then None)."""


class _Kind(Enum):
    DIRECT = 1
    """No state: fires at once."""
    THRESHOLD = 2
    KEYED = 3
    """Sequence A (followed_by / not_followed_by) or debounce: keyed by a field."""
    SECOND = 4
    """A sequence's B pattern."""


@dataclass(frozen=True, slots=True)
class _Plan:
    """What matching one index entry needs from its trigger, read once per definition
    (the registry drops its plans with every change)."""

    trigger: TriggerDocument
    trigger_id: str
    kind: _Kind
    sources: frozenset[str]
    """Empty: any source."""
    workspace: str | None
    condition: Condition
    threshold: Threshold | None
    key: str | None
    """The field a KEYED or SECOND match is grouped by."""
    role: str
    body_condition: bool
    """Whether the condition reads the same from an event's JSON as from its `Event`
    (`judged_on_json`)."""


_NO_PLAN = object()
"""The plan of an entry whose trigger is gone or has no event section."""


def _planned(plans: dict[str, Any], registry: Registry, entry: str) -> object:
    """The plan of an index entry (or _NO_PLAN), made and remembered in `plans`, the
    memo the caller took from the registry before it began: a change meanwhile swaps in
    a new one, so a plan read from the registry as it was lands in the memo thrown away."""
    found = plans[entry] = _plan(registry, entry) or _NO_PLAN
    return found


def _plan(registry: Registry, entry: str) -> _Plan | None:
    second = entry.endswith(SECOND_ROLE)
    trigger_id = entry.removesuffix(SECOND_ROLE)
    trigger = registry.get(trigger_id)
    if trigger is None or trigger.event is None:
        return None
    spec = trigger.event
    follow = spec.followed_by or spec.not_followed_by
    condition = registry.condition(trigger_id)
    key: str | None
    if second:
        if follow is None:
            return None
        kind, sources, key, role = _Kind.SECOND, follow.source, follow.key, "second"
    elif follow is not None or spec.debounce is not None:
        key = follow.key if follow is not None else spec.debounce.key  # type: ignore[union-attr]
        kind, sources, role = _Kind.KEYED, spec.source, "first" if follow else "event"
    else:
        kind = _Kind.DIRECT if condition.threshold is None else _Kind.THRESHOLD
        sources, key, role = spec.source, None, "event"
    return _Plan(
        trigger,
        trigger_id,
        kind,
        frozenset(sources or ()),
        trigger.workspace,
        condition,
        condition.threshold,
        key,
        role,
        kind is not _Kind.SECOND and all(map(_same_in_body, condition.paths())),
    )


def _same_in_body(path: str) -> bool:
    """Whether `path` reads the same from a structured event's JSON as from its `Event`'s
    fields: a path into `data` or a name outside the CloudEvents attributes (an extension
    attribute, or a name looked up in `data`), which the two hold as the same objects.
    Not an attribute the Event fills in when the JSON lacks it (`source` is then "",
    `subject` None), nor `data` itself, nor JSONPath (it sees the whole event)."""
    first, dot, _ = path.partition(".")
    if path.startswith("$"):
        return False
    return first not in ATTRIBUTES or (first == "data" and bool(dot))


OnJson = tuple[list[tuple[str, Verdict]], list[_Plan]]
"""What a structured event's candidate triggers say of it on its JSON alone: the
verdicts of those that turn it away, and the plans of those that take it (`taken_by`
makes their matches). A plain pair: the matcher makes one per event it reads."""


def judged_on_json(
    registry: Registry, entries: tuple[str, ...], body: dict[str, Any]
) -> OnJson | None:
    """Each candidate trigger (`entries`) of a structured event judged on what its JSON
    says (its source, its workspace, a condition on `data` or extension attributes),
    without reading the event in full: the verdicts `match_event` gives those that turn
    it away, and those that take it. None when one of them cannot tell from the JSON
    (or its source or workspace is not a string): `match_event` then judges the event
    read in full, and a record that is not a valid event is refused."""
    source = body.get("source", "")
    workspace = body.get("workspace_id")
    if type(source) is not str or (workspace is not None and type(workspace) is not str):
        return None
    plans = registry.plans
    refused = []
    taking = []
    for entry in entries:
        found = plans.get(entry) or _planned(plans, registry, entry)
        if found is _NO_PLAN:
            continue
        plan = cast(_Plan, found)
        if plan.sources and source not in plan.sources:
            refused.append((plan.trigger_id, Verdict.SOURCE_MISMATCH))
        elif not plan.body_condition:
            return None
        elif workspace and plan.workspace and workspace != plan.workspace:
            refused.append((plan.trigger_id, Verdict.WORKSPACE_MISMATCH))
        elif plan.condition.matches(body):
            taking.append(plan)
        else:
            refused.append((plan.trigger_id, Verdict.CONDITION_FAILED))
    return refused, taking


def taken_by(
    plans: list[_Plan],
    event: Event,
    data_max_bytes: int = EVENT_DATA_MAX_BYTES,
    encode: bool = False,
) -> list[Match]:
    """The matches `match_event` gives for the candidates that take `event` by its JSON
    (the plans `judged_on_json` gives), without judging them again."""
    seen = _Event(event, data_max_bytes)
    return [_taken(plan, seen, encode) for plan in plans]


def event_cause_key(event: DomainEvent | Event) -> str:
    """CloudEvents ids are unique per source, so the pair identifies the event."""
    return f"{event.source}\x1f{event.id}"


def event_summary(event: DomainEvent | Event, data_max_bytes: int) -> dict[str, Any]:
    """What a fire's input says about an event: its attributes, and its data unless that
    is over `data_max_bytes` of JSON; then `data_truncated` and `data_bytes` say so."""
    read = event if isinstance(event, Event) else event_of(event)
    summary = read.summary()
    data = summary.get("data")
    if data is not None and not read.data_within(data_max_bytes):
        size = len(orjson.dumps(data))
        if size > data_max_bytes:
            summary.pop("data")
            summary["data_truncated"] = True
            summary["data_bytes"] = size
    return summary


def _bounded_attributes(summary: dict[str, Any]) -> dict[str, Any]:
    """The summary with attributes (all but `data`) bounded: a string longer than
    KEPT_ATTRIBUTE_MAX_CHARS cut there, ending with '…'; another value that long (an
    extension holding an object) left out; and once the attributes reach
    KEPT_ATTRIBUTES_MAX_CHARS in all (an event may have a thousand extensions), the
    extensions after that left out. `attributes_truncated` names them (the first 100)."""
    kept: dict[str, Any] = {}
    cut: list[str] = []
    total = 0
    for name, value in summary.items():
        if name != "data":
            if type(value) is str:
                size = len(value)
                if size > KEPT_ATTRIBUTE_MAX_CHARS:
                    value, size = value[:KEPT_ATTRIBUTE_MAX_CHARS] + "…", KEPT_ATTRIBUTE_MAX_CHARS
                    cut.append(name)
            else:
                size = len(orjson.dumps(value))
                if size > KEPT_ATTRIBUTE_MAX_CHARS:
                    cut.append(name)
                    continue
            total += size + len(name)
            if total > KEPT_ATTRIBUTES_MAX_CHARS and name not in _NAMED_ATTRIBUTES:
                if not cut or cut[-1] != name:
                    cut.append(name)
                continue
        kept[name] = value
    if cut:
        more = len(cut) - 100
        kept["attributes_truncated"] = cut[:100] + ([f"({more} more)"] if more > 0 else [])
    return kept


_NAMED_ATTRIBUTES = frozenset(ATTRIBUTES)
"""CloudEvents' own attributes are kept (cut to their bound) whatever the extensions."""


def fire_for(
    trigger: TriggerDocument, cause_key: str, cause: Cause, input_: dict[str, Any]
) -> Fire:
    """An event fire. `input_mapping` reads from `input_["event"]`, the event that fired
    it (for a window, the one that crossed the threshold)."""
    return new_fire(trigger, CauseKind.EVENT, cause_key, cause, _mapped(trigger, input_))


def encoded_event_fire(
    trigger: TriggerDocument, cause_key: str, cause: dict[str, Any], input_: dict[str, Any]
) -> EncodedFire:
    """`encoded(fire_for(trigger, cause_key, trusted(Cause, **cause), input_))` without
    making the models (`encoded_fire`)."""
    return encoded_fire(trigger, CauseKind.EVENT, cause_key, cause, _mapped(trigger, input_))


def _mapped(trigger: TriggerDocument, input_: dict[str, Any]) -> dict[str, Any]:
    if trigger.agent.input_mapping:
        mapped, _ = map_paths(trigger.agent.input_mapping, input_.get("event", {}))
        return {**input_, **mapped}
    return input_


def event_cause(event: DomainEvent | Event) -> Cause:
    return trusted(Cause, **_event_cause_fields(event))


def _event_cause_fields(event: DomainEvent | Event) -> dict[str, Any]:
    return {
        "type": CauseKind.EVENT,
        "event_id": event.id,
        "event_type": event.type,
        "event_source": event.source,
    }


class _Event:
    """One event as the matcher needs it, its summaries each built at most once."""

    def __init__(self, event: Event, data_max_bytes: int) -> None:
        self.event = event
        self.as_dict = event.fields
        self.data_max_bytes = data_max_bytes
        self._summary: dict[str, Any] | None = None

    @property
    def summary(self) -> dict[str, Any]:
        """The event as stateful triggers keep it (data and attributes bounded for window
        state)."""
        if self._summary is None:
            summary = event_summary(self.event, SAMPLE_DATA_MAX_BYTES)
            size = self.event.size
            if size is None or size > KEPT_ATTRIBUTE_MAX_CHARS:  # one may be that long
                summary = _bounded_attributes(summary)
            self._summary = summary
        return self._summary

    def input_summary(self) -> dict[str, Any]:
        """The event as a direct fire's input carries it."""
        if self.data_max_bytes == SAMPLE_DATA_MAX_BYTES:
            return self.summary
        return event_summary(self.event, self.data_max_bytes)

    def window_match(
        self, trigger_id: str, group: str, role: str = "event", value: float | None = None
    ) -> Matched:
        event = self.event
        return Matched(
            trigger_id,
            group,
            role,
            event_key(event.source, event.id),
            event.time or 0.0,
            value,
            self.summary,
        )

    def keyed(self, trigger_id: str, path: str | None, role: str) -> Matched | None:
        """A match keyed by `path`'s value; None when the event lacks it."""
        group = ""
        if path is not None:
            value = field_reader(path)(self.as_dict)
            if value is MISSING or value is None:
                return None
            group = bounded_group(group_text(value))
        return self.window_match(trigger_id, group, role)


def event_key(source: str, event_id: str) -> str:
    """What dedupes an event in a window or sequence: its source and id, or, for a key
    longer than EVENT_KEY_MAX_CHARS, '#' and a 128-bit digest of it (33 characters)."""
    key = f"{source}\x1f{event_id}"
    if len(key) <= EVENT_KEY_MAX_CHARS:
        return key
    return "#" + hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def counts_by_event_time(match: Match) -> bool:
    """Whether the match goes to state that reads the event's time: a threshold's window
    or a sequence (a debounce measures quiet on the worker's clock)."""
    event = match.trigger.event
    return match.window is not None and event is not None and not event.debounce


def too_far_ahead(
    matches: Sequence[Match], event_time: float | None, now: float, max_ahead: float
) -> str | None:
    """Why an event stamped more than `max_ahead` seconds after `now` cannot go to the
    triggers among `matches` that count by event time, or None. Such an event would be
    its window's newest, and every event after it a whole window behind: late, not
    counted, until the clock reached its time. The other triggers take it."""
    if event_time is None or event_time <= now + max_ahead:
        return None
    counting = [m.trigger.name for m in matches if counts_by_event_time(m)]
    if not counting:
        return None
    return (
        f"event time {iso_time(event_time)} is {event_time - now:,.0f} s ahead of the "
        f"worker's clock (at most {max_ahead:g} s: TRIGGERS_EVENT_TIME_MAX_AHEAD_SECONDS), "
        f"and {', '.join(map(repr, counting))} count by event time: the event would be its "
        "window's newest and the events after it late. Fix the producer's clock or the "
        "event's `time` and send it again"
    )


def match_event(
    registry: Registry,
    event: DomainEvent | Event,
    explain: bool = False,
    data_max_bytes: int = EVENT_DATA_MAX_BYTES,
    encode: bool = False,
) -> list[Match]:
    """Every candidate trigger (by pattern) with its verdict; `explain` records each test.
    A direct fire's input keeps the event's data up to `data_max_bytes`; with `encode`
    the fire comes as the JSON a matcher writes (`encoded_fire`), not as a model."""
    if not isinstance(event, Event):
        event = event_of(event)
    candidates = registry.candidates(event.type)
    if not candidates:
        return []
    seen = _Event(event, data_max_bytes)
    fields = seen.as_dict
    plans = registry.plans
    matches = []
    for entry in candidates:
        found = plans.get(entry) or _planned(plans, registry, entry)
        if found is _NO_PLAN:
            continue
        plan = cast(_Plan, found)
        trigger, trigger_id = plan.trigger, plan.trigger_id
        if plan.sources and event.source not in plan.sources:
            matches.append(Match(trigger, trigger_id, Verdict.SOURCE_MISMATCH))
            continue
        kind = plan.kind
        if kind is _Kind.SECOND:
            second = seen.keyed(trigger_id, plan.key, "second")
            verdict = Verdict.WINDOWED if second else Verdict.KEY_MISSING
            matches.append(Match(trigger, trigger_id, verdict, window=second))
            continue
        if event.workspace_id and plan.workspace and event.workspace_id != plan.workspace:
            matches.append(Match(trigger, trigger_id, Verdict.WORKSPACE_MISMATCH))
            continue
        trace: list[Outcome] | tuple[()] = ()
        if explain:
            trace = []
            passed = plan.condition.predicate.evaluate(fields, trace)
        else:
            passed = plan.condition.matches(fields)
        if not passed:
            matches.append(Match(trigger, trigger_id, Verdict.CONDITION_FAILED, trace=trace))
            continue
        matches.append(_taken(plan, seen, encode, trace))
    return matches


def _taken(plan: _Plan, seen: _Event, encode: bool, trace: Sequence[Outcome] = ()) -> Match:
    """The match of a candidate whose source, workspace and condition the event passed:
    a fire, or a match for its window (its sequence, its debounce)."""
    trigger, trigger_id, kind, fields = plan.trigger, plan.trigger_id, plan.kind, seen.as_dict
    if kind is _Kind.THRESHOLD:
        threshold = plan.threshold
        assert threshold is not None
        value = None
        if threshold.aggregate is not None:
            raw = threshold.aggregate.read(fields)
            if raw is not MISSING and isinstance(raw, int | float) and not isinstance(raw, bool):
                value = float(raw)
        window = seen.window_match(trigger_id, threshold.group_of(fields), value=value)
        return Match(trigger, trigger_id, Verdict.WINDOWED, None, window, trace)
    if kind is _Kind.KEYED:
        keyed = seen.keyed(trigger_id, plan.key, plan.role)
        verdict = Verdict.WINDOWED if keyed else Verdict.KEY_MISSING
        return Match(trigger, trigger_id, verdict, None, keyed, trace)
    event = seen.event
    if encode:
        cause = _event_cause_fields(event)
        input_ = {"event": seen.input_summary()}
        made = encoded_event_fire(trigger, event_cause_key(event), cause, input_)
        return Match(trigger, trigger_id, Verdict.FIRED, None, None, trace, made)
    fire = fire_for(
        trigger, event_cause_key(event), event_cause(event), {"event": seen.input_summary()}
    )
    return Match(trigger, trigger_id, Verdict.FIRED, fire, None, trace)
