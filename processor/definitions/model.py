"""The trigger document (docs/architecture.md): one shape for YAML, CLI and REST.

The seed's YAML is the canonical form (`trigger:` root); the product note's Python field
names (`schedule_config`, `agent_id`, `input_template`, ...) are accepted as aliases.
"""

from __future__ import annotations

import ipaddress
import re
import uuid
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jsonpath
from croniter import CroniterBadDateError, croniter
from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from processor.language.conditions import ConditionError, parse_condition
from processor.language.durations import Duration
from processor.language.patterns import compile_pattern
from processor.language.signatures import SLACK_HEADER, AuthType
from processor.serde import shallow

TRIGGER_NAMESPACE = uuid.UUID("0b7d3c2e-5f47-4f7e-8a51-9c3f2d6e1a70")
SECRET_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")


def trigger_id_for(workspace: str, name: str) -> str:
    """The id of a document without `id`: stable per workspace and name, so re-applying
    a file updates the trigger instead of creating a second one."""
    return str(uuid.uuid5(TRIGGER_NAMESPACE, f"{workspace}/{name}"))


def _jsonpath(path: str, example: str) -> str:
    """`path` if it compiles as JSONPath, else a ValueError that shows how to write one."""
    try:
        jsonpath.compile(path)
    except jsonpath.JSONPathError as exc:
        first_line = str(exc).splitlines()[0]
        raise ValueError(
            f"{path!r} is not a JSONPath ({first_line}); write one like {example}"
        ) from None
    return path


def _longer_than_zero(value: Duration) -> Duration:
    if value.seconds <= 0:
        raise ValueError("a duration must be longer than zero")
    return value


PositiveDuration = Annotated[Duration, AfterValidator(_longer_than_zero)]
"""A duration field that zero would make meaningless (a period, a delay, a wait)."""


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class TriggerType(StrEnum):
    """Which kind of input makes the trigger fire."""

    SCHEDULE = "schedule"
    """A cron expression, interval or one-shot time comes due."""
    WEBHOOK = "webhook"
    """An HTTP call reaches the gateway."""
    EVENT = "event"
    """A domain event on an input topic matches the pattern and condition."""


class OverlapPolicy(StrEnum):
    """What happens to a fire while `max_concurrent` executions already run."""

    SKIP = "skip"
    """Do not start it; record it as `skipped`. The default."""
    BUFFER_ONE = "buffer_one"
    """Keep the newest one waiting and start it when a running one ends."""
    BUFFER_ALL = "buffer_all"
    """Keep them all waiting (bounded) and start them in order."""
    CANCEL_OTHER = "cancel_other"
    """Cancel the oldest running execution and start this one."""
    ALLOW_ALL = "allow_all"
    """Start it anyway: `max_concurrent` is not enforced."""


class ThrottleExcess(StrEnum):
    """What happens to a fire over its trigger's `throttle`."""

    DROP = "drop"
    """Do not run it; record it as `skipped` with the reason. The default."""
    QUEUE = "queue"
    """Keep it waiting (bounded, like `buffer_all`) and run it when the period allows."""


class ThrottleSpec(_Doc):
    """At most `limit` runs start in any sliding `period`, per trigger or per `key`."""

    limit: int = Field(ge=1, description="Most runs started within one `period`.")
    period: PositiveDuration = Field(description="The sliding window, e.g. `1m` or `1h`.")
    key: str | None = Field(
        None,
        description="JSONPath into the run's input; each value found is throttled on its "
        "own (a run whose input has no value shares the empty key).",
    )
    excess: ThrottleExcess = Field(ThrottleExcess.DROP, description="See ThrottleExcess.")

    @field_validator("key")
    @classmethod
    def _key_parses(cls, value: str | None) -> str | None:
        return _jsonpath(value, "$.customer_id") if value is not None else None


class CircuitBreakerSpec(_Doc):
    """Pause a trigger after `failures` consecutive failed or timed-out runs."""

    failures: int = Field(ge=1, description="Consecutive failed or timed-out runs that open it.")
    cooldown: PositiveDuration = Field(
        Duration("5m"),
        description="How long it stays open; then one trial run decides (half-open).",
    )


class Backoff(StrEnum):
    """How the delay before each retry grows."""

    EXPONENTIAL = "exponential"
    """`initial`, then twice the last delay, up to `max`. The default."""
    FIXED = "fixed"
    """`initial` every time."""


class RetryOn(StrEnum):
    """Which endings of an attempt start another."""

    FAILED = "failed"
    TIMED_OUT = "timed_out"


RETRY_ATTEMPTS_MAX = 100


class RetrySpec(_Doc):
    """Run a failed attempt again after a delay; `attempts` counts the first one too.

    A retry is the same execution (same `execution_id`, `attempt` 2, 3, ...). When the
    attempts run out the execution is `failed` (or `timed_out`) for good."""

    attempts: int = Field(
        ge=1, le=RETRY_ATTEMPTS_MAX, description="Attempts in all, the first included."
    )
    backoff: Backoff = Field(Backoff.EXPONENTIAL, description="See Backoff.")
    initial: PositiveDuration = Field(Duration("10s"), description="Delay before the first retry.")
    max: PositiveDuration = Field(
        Duration("10m"), description="Longest delay between two attempts."
    )
    jitter: bool = Field(
        True,
        description="Wait between half the delay and all of it (chosen per execution and "
        "attempt), so executions that failed together do not retry together.",
    )
    on: list[RetryOn] = Field(
        default_factory=lambda: [RetryOn.FAILED, RetryOn.TIMED_OUT],
        min_length=1,
        description="Which endings are retried: failed, timed_out.",
    )

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> RetrySpec:
        if self.max.seconds < self.initial.seconds:
            raise ValueError(
                f"max ({self.max}) is shorter than initial ({self.initial}); "
                "make max at least initial"
            )
        return self


class OnFailure(StrEnum):
    """What happens when an execution has failed or timed out for good."""

    NONE = "none"
    """Nothing beyond its record. The default."""
    EMIT = "emit"
    """Write a CloudEvent `trigger.execution.failed` to `events` (any trigger can match it)."""


class ConcurrencySpec(_Doc):
    """At most `limit` executions at once per value of `key` (e.g. one per customer)."""

    limit: int = Field(ge=1, description="Executions of one key allowed to run at once.")
    key: str = Field(
        description="JSONPath into the run's input, e.g. `$.event.data.customer_id` (a run "
        "whose input has no value shares the empty key)."
    )

    @field_validator("key")
    @classmethod
    def _key_parses(cls, value: str) -> str:
        return _jsonpath(value, "$.event.data.customer_id")


class CatchUp(StrEnum):
    """What a schedule does about fires missed while no worker ran (beyond `grace`)."""

    SKIP = "skip"
    """Drop them; continue with the next scheduled time."""
    LATEST = "latest"
    """Make only the most recent missed fire, if within `catch_up_window`. The default."""
    ALL = "all"
    """Make every missed fire within `catch_up_window`, at most `max_catch_up` (the newest)."""


class AgentSpec(_Doc):
    id: str = Field(min_length=1, description="The agent to run (runtimes route on it).")
    input: dict[str, Any] = Field(
        default_factory=dict,
        validation_alias=AliasChoices("input", "input_template"),
        description="Fixed input merged into every run's input.",
    )
    input_mapping: dict[str, str] = Field(
        default_factory=dict,
        description="Input keys mapped to JSONPath expressions over what caused the fire: "
        "a webhook's `{body, headers, query, path, method, received_at}`, or an event "
        "trigger's event (`{id, type, source, time, data, ...}`; for a threshold, the event "
        "that crossed it). Schedule triggers have nothing to map.",
    )

    @field_validator("input")
    @classmethod
    def _not_too_deep(cls, value: dict[str, Any]) -> dict[str, Any]:
        return shallow(value)

    @field_validator("input_mapping")
    @classmethod
    def _paths_parse(cls, mapping: dict[str, str]) -> dict[str, str]:
        for key, path in mapping.items():
            try:
                _jsonpath(path, "$.body.text")
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        return mapping


class ScheduleSpec(_Doc):
    cron: str | None = Field(
        None, description="Cron expression: 5 fields, an optional 6th for seconds, or @daily."
    )
    every: PositiveDuration | None = Field(
        None, description="Interval instead of cron, e.g. `15m`."
    )
    at: datetime | None = Field(None, description="One-shot fire time instead of cron.")
    timezone: str = Field("UTC", description="IANA timezone the cron is read in.")
    start_date: datetime | None = Field(None, description="No fire before this time.")
    end_date: datetime | None = Field(None, description="No fire after this time.")
    jitter_seconds: int = Field(
        0, ge=0, description="Delay each fire by up to this many seconds (same per fire)."
    )
    grace_seconds: int = Field(
        60, ge=0, description="A fire this late or less is always made (covers failover)."
    )
    catch_up: CatchUp = Field(CatchUp.LATEST, description="Policy for older missed fires.")
    catch_up_window: Duration = Field(Duration("1h"), description="How far back catch-up looks.")
    max_catch_up: int = Field(10, ge=1, description="Most fires `catch_up: all` makes at once.")

    @field_validator("cron")
    @classmethod
    def _cron_parses(cls, value: str | None) -> str | None:
        if value is None:
            return value
        seconds_first = len(value.split()) == 6
        if not croniter.is_valid(value, second_at_beginning=seconds_first):
            raise ValueError(
                f"{value!r} is not a cron expression; write 5 fields "
                "(minute hour day month weekday), 6 with seconds first, or @hourly/@daily"
            )
        try:  # from a leap year's start: 29 February is a date that comes
            croniter(value, datetime(2000, 1, 1), second_at_beginning=seconds_first).get_next()
        except CroniterBadDateError:
            raise ValueError(
                f"{value!r} names no date that exists (such as 30 February or 31 April), "
                "so it would never fire; check its day and month fields"
            ) from None
        return value

    @field_validator("at", "start_date", "end_date")
    @classmethod
    def _in_utc_when_no_zone(cls, value: datetime | None) -> datetime | None:
        """A time written without a zone is UTC, as everywhere else in the product (it
        was read in the local zone of whichever machine looked at it)."""
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA timezone; write one like America/New_York or UTC"
            ) from None
        return value

    @field_validator("every")
    @classmethod
    def _whole_ticks(cls, value: PositiveDuration | None) -> PositiveDuration | None:
        if value is not None and value.seconds < 1:
            raise ValueError(
                f"{value!r} is shorter than a second; schedules tick once a second: "
                "write 1s or longer"
            )
        return value

    @model_validator(mode="after")
    def _one_timing(self) -> ScheduleSpec:
        given = [name for name in ("cron", "every", "at") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of cron, every, at (got {given or 'none'})")
        if self.start_date and self.end_date and self.end_date <= self.start_date:
            raise ValueError("end_date must be after start_date")
        return self


class WebhookAuth(_Doc):
    """How the gateway checks a call. Presets fill in their provider's scheme; every
    field below overrides it, so any HMAC provider can be described here."""

    type: AuthType = Field(
        description="hmac, bearer, basic, github, stripe, slack, standard-webhooks."
    )
    secret: str | None = Field(None, description="A `${ENV_NAME}` reference, never the value.")
    secrets: list[str] = Field(
        default_factory=list, description="Several `${ENV}` references, for rotation."
    )
    header: str | None = Field(None, description="Header carrying the signature or token.")
    algorithm: Literal["sha256", "sha1", "sha512"] | None = Field(None, description="HMAC hash.")
    encoding: Literal["hex", "base64"] | None = Field(None, description="Signature encoding.")
    prefix: str | None = Field(None, description="Text before the signature, e.g. `sha256=`.")
    secret_encoding: Literal["utf8", "base64", "hex", "whsec"] | None = Field(
        None, description="How the secret is written (whsec: Standard Webhooks' `whsec_...`)."
    )
    message: str | None = Field(
        None, description="What is signed: `{body}`, `{timestamp}`, `{id}` placeholders."
    )
    timestamp_header: str | None = Field(None, description="Header with the signing time.")
    id_header: str | None = Field(None, description="Header with the delivery id (replays).")
    tolerance_seconds: int | None = Field(
        None, ge=1, description="Accepted clock difference for timestamped schemes (300)."
    )
    username: str | None = Field(None, description="User name for `basic`.")

    @field_validator("secret")
    @classmethod
    def _secret_is_reference(cls, value: str | None) -> str | None:
        return _secret_reference(value) if value is not None else None

    @field_validator("secrets")
    @classmethod
    def _secrets_are_references(cls, values: list[str]) -> list[str]:
        return [_secret_reference(v) for v in values]

    @field_validator("header", "timestamp_header", "id_header")
    @classmethod
    def _lower_header(cls, value: str | None) -> str | None:
        return value.lower() if value else value

    @model_validator(mode="after")
    def _complete(self) -> WebhookAuth:
        if not self.secret and not self.secrets:
            raise ValueError("give `secret` (or `secrets` for rotation) as ${ENV_NAME}")
        if self.type is AuthType.HMAC and not self.header:
            raise ValueError("hmac needs the `header` that carries the signature")
        return self

    @property
    def secret_references(self) -> list[str]:
        return [*([self.secret] if self.secret else []), *self.secrets]


def _secret_reference(value: str) -> str:
    if not SECRET_REFERENCE.match(value):
        raise ValueError(
            "write secrets as an environment reference like ${SLACK_WEBHOOK_SECRET}; "
            "the value itself must not be stored in a trigger"
        )
    return value


class RateLimit(_Doc):
    requests: int = Field(ge=1, description="Requests allowed per period.")
    period: Duration = Field(Duration("1m"), description="Length of the period, e.g. `1m`.")

    @field_validator("period")
    @classmethod
    def _period_parses(cls, value: Duration) -> Duration:
        if value.seconds < 1:
            raise ValueError("the period must be at least 1s")
        return value


class WebhookSpec(_Doc):
    endpoint: str | None = Field(
        None, description="Custom path, e.g. /webhooks/slack/commands (plus /webhooks/{id})."
    )
    method: str = Field("POST", description="HTTP method the endpoint accepts.")
    authentication: WebhookAuth | None = None
    rate_limit: RateLimit | None = None
    ip_whitelist: list[str] | None = Field(None, description="Allowed client CIDRs.")

    @field_validator("ip_whitelist")
    @classmethod
    def _cidrs_parse(cls, values: list[str] | None) -> list[str] | None:
        for value in values or []:
            try:
                ipaddress.ip_network(value, strict=False)
            except ValueError:
                raise ValueError(
                    f"{value!r} is not an IP address or CIDR like 10.0.0.0/8"
                ) from None
        return values

    @field_validator("endpoint")
    @classmethod
    def _endpoint_is_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value!r} is not a path; write it starting with /")
        return value

    @field_validator("method")
    @classmethod
    def _method_upper(cls, value: str) -> str:
        return value.upper()


def _compiles(pattern: str) -> str:
    compile_pattern(pattern)  # ValueError for a regex RE2 cannot run
    return pattern


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


EventPattern = Annotated[str, AfterValidator(_compiles)]
"""An event type glob, or a regular expression after `re:` (checked to run on RE2)."""
Sources = Annotated[list[str], BeforeValidator(_as_list)]
"""Accepted event sources; a single string is a list of one."""


class FollowUp(_Doc):
    """The B of "A then B" / "A not followed by B": matched to an A by a shared key."""

    pattern: EventPattern = Field(min_length=1, description="B's event type glob, or `re:` regex.")
    within: PositiveDuration = Field(description="How long after A, e.g. `30m`.")
    key: str = Field(description="Field both events carry, e.g. `data.order_id`.")
    source: Sources = Field(default_factory=list, description="B's accepted sources.")


class Debounce(_Doc):
    """Fire once the key has been quiet for `quiet`, with every event of the burst."""

    quiet: PositiveDuration = Field(
        description="Fire after this long without a new event, e.g. `30s`."
    )
    max_wait: PositiveDuration | None = Field(
        None, description="Fire at the latest this long after the first."
    )
    key: str | None = Field(None, description="One burst per value of this field (default: one).")
    max_events: int = Field(100, ge=1, le=1000, description="Events handed to the agent, at most.")


class EventSpec(_Doc):
    pattern: EventPattern = Field(
        min_length=1,
        description="Event type glob (`error.*`) or a regular expression after `re:`.",
    )
    source: Sources = Field(
        default_factory=list, description="Accepted event sources; empty means any."
    )
    condition: dict[str, Any] | list[Any] | None = Field(
        None, description="Condition on the event, and threshold settings."
    )
    followed_by: FollowUp | None = Field(None, description='"A then B within T".')
    not_followed_by: FollowUp | None = Field(None, description='"A not followed by B within T".')
    debounce: Debounce | None = Field(None, description="Fire once a burst has gone quiet.")

    @model_validator(mode="after")
    def _one_stateful_pattern(self) -> EventSpec:
        given = [n for n in ("followed_by", "not_followed_by", "debounce") if getattr(self, n)]
        threshold = isinstance(self.condition, dict) and any(
            k in self.condition for k in ("count_threshold", "window", "aggregate")
        )
        if len(given) + threshold > 1:
            raise ValueError(
                f"use one of a threshold, followed_by, not_followed_by, debounce (got {given})"
            )
        return self

    @field_validator("condition")
    @classmethod
    def _condition_parses(cls, value: Any) -> Any:
        try:
            parse_condition(value, "")
        except ConditionError as exc:
            raise ValueError(str(exc).lstrip(": ")) from None
        return value


class TriggerDocument(_Doc):
    """One trigger. `id` and `workspace` are filled in when it is applied."""

    id: str | None = Field(None, description="Defaults to an id derived from workspace + name.")
    name: str = Field(min_length=1, description="Human name, unique within the workspace.")
    description: str | None = None
    workspace: str | None = Field(
        None,
        validation_alias=AliasChoices("workspace", "workspace_id"),
        description="Workspace that owns the trigger.",
    )
    type: TriggerType
    enabled: bool = True
    schedule: ScheduleSpec | None = Field(
        None, validation_alias=AliasChoices("schedule", "schedule_config")
    )
    webhook: WebhookSpec | None = Field(
        None, validation_alias=AliasChoices("webhook", "webhook_config")
    )
    event: EventSpec | None = Field(None, validation_alias=AliasChoices("event", "event_config"))
    agent: AgentSpec
    max_concurrent: int = Field(1, ge=1, description="Executions allowed to run at once.")
    overlap: OverlapPolicy = Field(OverlapPolicy.SKIP, description="See OverlapPolicy.")
    timeout_seconds: int = Field(3600, ge=1, description="Deadline of each execution.")
    throttle: ThrottleSpec | None = Field(None, description="Rate limit on runs; see ThrottleSpec.")
    circuit_breaker: CircuitBreakerSpec | None = Field(
        None, description="Pause after consecutive failures; see CircuitBreakerSpec."
    )
    retry: RetrySpec | None = Field(None, description="Retry failed attempts; see RetrySpec.")
    on_failure: OnFailure = Field(OnFailure.NONE, description="See OnFailure.")
    concurrency: ConcurrencySpec | None = Field(
        None,
        description="Per-key limit on running executions, next to `max_concurrent`; "
        "`overlap` decides about a fire over either. See ConcurrencySpec.",
    )

    @model_validator(mode="before")
    @classmethod
    def _note_agent_fields(cls, data: Any) -> Any:
        """Accept the note's flat `agent_id` / `input_template` as the `agent` section."""
        if isinstance(data, dict) and "agent" not in data and "agent_id" in data:
            data = dict(data)
            agent: dict[str, Any] = {"id": data.pop("agent_id")}
            if "input_template" in data:
                agent["input"] = data.pop("input_template")
            data["agent"] = agent
        return data

    @model_validator(mode="after")
    def _section_matches_type(self) -> TriggerDocument:
        article = "an" if self.type is TriggerType.EVENT else "a"
        if getattr(self, self.type.value) is None:
            raise ValueError(
                f"{article} {self.type.value} trigger needs a `{self.type.value}:` section"
            )
        for kind in TriggerType:
            if kind is not self.type and getattr(self, kind.value) is not None:
                raise ValueError(
                    f"`{kind.value}:` does not belong in {article} {self.type.value} trigger; "
                    f"remove it or set type: {kind.value}"
                )
        if self.type is TriggerType.SCHEDULE and self.agent.input_mapping:
            raise ValueError(
                "agent.input_mapping: a schedule fire carries no payload to map; put fixed "
                "values in agent.input (and a run's own values in `triggers run --input`)"
            )
        return self

    def resolved(self, default_workspace: str) -> TriggerDocument:
        """A copy with `workspace` and `id` filled in."""
        workspace = self.workspace or default_workspace
        return self.model_copy(
            update={"workspace": workspace, "id": self.id or trigger_id_for(workspace, self.name)}
        )

    @property
    def trigger_id(self) -> str:
        if self.id is None:
            raise ValueError("the document has no id yet; call resolved() first")
        return self.id


def document_json(document: TriggerDocument) -> dict[str, Any]:
    """The stored form of a document (what goes to `trigger-definitions`)."""
    return document.model_dump(mode="json", exclude_none=True)


# Characters that mean something in a regular expression but are literal in a glob.
REGEX_ONLY = re.compile(r"[\^$\\()|+?{}\[\]]|\A\.\*")


def warnings_for(document: TriggerDocument, now: datetime | None = None) -> list[str]:
    """Things that are valid but probably not what the author meant."""
    found = []
    schedule, now = document.schedule, now or datetime.now(UTC)
    if schedule is not None and schedule.at is not None:
        if schedule.at < now - timedelta(seconds=schedule.grace_seconds):
            found.append(
                f"schedule.at: {schedule.at.isoformat()} has passed, so this one-shot never "
                f"fires; set a time to come, or start its agent now with `triggers run`"
            )
    elif schedule is not None and schedule.end_date is not None and schedule.end_date < now:
        found.append(
            f"schedule.end_date: {schedule.end_date.isoformat()} has passed, so this "
            "schedule makes no more fires"
        )
    auth = document.webhook.authentication if document.webhook else None
    if auth is not None and auth.type is AuthType.HMAC and auth.header == SLACK_HEADER:
        found.append(
            "webhook.authentication: plain `hmac` with Slack's X-Slack-Signature header; Slack "
            "signs `v0:{timestamp}:{body}`, so calls are accepted if they match either that or "
            "the raw-body HMAC. Prefer `type: slack`, which also rejects replays older than 5m."
        )
    if document.event is not None:
        follow = document.event.followed_by or document.event.not_followed_by
        patterns = [("event.pattern", document.event.pattern)]
        if follow is not None:
            which = "followed_by" if document.event.followed_by else "not_followed_by"
            patterns.append((f"event.{which}.pattern", follow.pattern))
        for where, pattern in patterns:
            if not pattern.startswith("re:") and REGEX_ONLY.search(pattern):
                found.append(
                    f"{where}: {pattern!r} is read as a glob (only `*` is special, every other "
                    f"character is literal), but it looks like a regular expression; if it is "
                    f"one, write {'re:' + pattern!r}"
                )
    return found
