"""Every Kafka topic the product uses, named once. See docs/architecture.md, "Topics"."""

from __future__ import annotations

from dataclasses import dataclass, field

from processor.config import Settings

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """A topic's default name and how `triggers topics create` makes it."""

    base_name: str
    compacted: bool = False
    keyed: bool = True
    """Keyed topics get `topic_partitions` partitions; the others get one."""
    config: dict[str, str] = field(default_factory=dict)


TRIGGER_DEFINITIONS = TopicSpec("trigger-definitions", compacted=True, keyed=False)
EVENTS = TopicSpec("events", config={"max.message.bytes": str(2 * 1024 * 1024)})
"""Accepts records up to 2 MiB so an over-limit event (over 1 MiB) reaches the matcher
and becomes a dead letter with the reason instead of an error only its producer sees."""
WEBHOOKS = TopicSpec("webhooks")
CRON_TICKS = TopicSpec("cron-ticks", keyed=False, config={"retention.ms": str(DAY_MS)})
TRIGGER_MATCHES = TopicSpec("trigger-matches")
"""Internal: events that passed a threshold trigger's condition, keyed by trigger + group."""
WINDOW_STATE = TopicSpec("trigger-window-state", compacted=True)
"""Internal: the changelog of the window state of each `trigger-matches` partition (same
partition number, same key); its records are processor/matching/state.py's."""
TRIGGER_FIRES = TopicSpec("trigger-fires")
AGENT_RUNS = TopicSpec("agent-runs")
AGENT_RUN_CONTROL = TopicSpec("agent-run-control")
AGENT_RUN_RESULTS = TopicSpec("agent-run-results")
TRIGGER_EXECUTIONS = TopicSpec("trigger-executions", compacted=True)
DEAD_LETTERS = TopicSpec(
    "trigger-dead-letters",
    # A letter keeps the rejected record whole (deadletters.MAX_KEPT_BYTES, 3 MiB, in
    # base64, with its headers): 5 MiB holds it.
    config={"retention.ms": str(14 * DAY_MS), "max.message.bytes": str(5 * 1024 * 1024)},
)
# Internal to the dispatcher: results re-keyed by trigger id, and its state changelog.
# Both must have as many partitions as `trigger-fires` (same key, same partition).
DISPATCH_RESULTS = TopicSpec("dispatch-results")
DISPATCH_STATE = TopicSpec("dispatch-state", compacted=True)

ALL_TOPICS: tuple[TopicSpec, ...] = (
    TRIGGER_DEFINITIONS,
    EVENTS,
    WEBHOOKS,
    CRON_TICKS,
    TRIGGER_MATCHES,
    WINDOW_STATE,
    TRIGGER_FIRES,
    AGENT_RUNS,
    AGENT_RUN_CONTROL,
    AGENT_RUN_RESULTS,
    TRIGGER_EXECUTIONS,
    DEAD_LETTERS,
    DISPATCH_RESULTS,
    DISPATCH_STATE,
)


def topic_name(spec: TopicSpec, settings: Settings) -> str:
    """The topic's name in this deployment (the configured prefix plus the default name)."""
    return settings.topic_prefix + spec.base_name


def partitions_for(spec: TopicSpec, settings: Settings) -> int:
    return settings.topic_partitions if spec.keyed else 1
