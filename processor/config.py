"""Settings for every component, read from `TRIGGERS_*` environment variables."""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class SecurityProtocol(StrEnum):
    """How clients talk to the brokers (librdkafka's `security.protocol`)."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class ApiKey(BaseModel):
    """An API key's workspace, and the name it goes by in `requested_by` (never the key)."""

    workspace: str
    name: str


class SaslMechanism(StrEnum):
    """How clients prove who they are over SASL (librdkafka's `sasl.mechanism`)."""

    PLAIN = "PLAIN"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class Compression(StrEnum):
    """How our producers compress record batches (librdkafka's `compression.type`)."""

    NONE = "none"
    GZIP = "gzip"
    SNAPPY = "snappy"
    LZ4 = "lz4"
    ZSTD = "zstd"


class Settings(BaseSettings):
    """Process settings. Each field is the environment variable `TRIGGERS_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="TRIGGERS_", extra="ignore")

    kafka_bootstrap: str = Field(
        "localhost:9092", description="Kafka bootstrap servers, comma separated."
    )
    kafka_security_protocol: SecurityProtocol = Field(
        SecurityProtocol.PLAINTEXT,
        description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL, for every client.",
    )
    kafka_sasl_mechanism: SaslMechanism = Field(
        SaslMechanism.SCRAM_SHA_512,
        description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (with a SASL_* protocol).",
    )
    kafka_sasl_username: str | None = Field(None, description="SASL user name.")
    kafka_sasl_password: SecretStr | None = Field(
        None, description="SASL password (never logged or shown)."
    )
    kafka_ssl_ca_location: Path | None = Field(
        None, description="PEM file of the CA(s) that signed the brokers' certificates."
    )
    kafka_ssl_certificate_location: Path | None = Field(
        None, description="PEM client certificate, for brokers that ask for one (mTLS)."
    )
    kafka_ssl_key_location: Path | None = Field(
        None, description="PEM private key of that client certificate."
    )
    kafka_compression: Compression = Field(
        Compression.LZ4,
        description="Compression of the record batches the product writes: none, gzip, "
        "snappy, lz4 or zstd.",
    )
    topic_prefix: str = Field(
        "", description="Prefix added to every topic name, e.g. `staging.`; empty by default."
    )
    topic_partitions: int = Field(
        6, ge=1, description="Partitions of the keyed topics `triggers topics create` makes."
    )
    topic_replication_factor: int | None = Field(
        None,
        ge=1,
        description="Replicas of every topic the product creates, Faust's included "
        "(min.insync.replicas one less); unset: the broker's default for ours, 1 for Faust's.",
    )
    app_id: str = Field(
        "triggers", description="Faust application id; also the prefix of consumer group ids."
    )
    data_dir: Path = Field(
        Path(".data"), description="Where workers keep local table state (RocksDB)."
    )
    event_topics: list[str] = Field(
        default_factory=list,
        description="Extra input topics read as domain events besides `events` (JSON list).",
    )
    default_workspace: str = Field(
        "default", description="Workspace given to trigger documents that name none."
    )
    http_host: str = Field("127.0.0.1", description="Address `triggers serve` listens on.")
    http_port: int = Field(8080, description="Port `triggers serve` listens on.")
    http_workers: int = Field(
        1,
        ge=1,
        description="Processes of `triggers serve` accepting on its port (one core each).",
    )
    worker_dispatcher: bool = Field(
        True,
        description="Whether `triggers worker` runs the dispatcher too; false when "
        "`triggers dispatcher` runs it in processes of its own.",
    )
    worker_dispatcher_process: bool = Field(
        True,
        description="With TRIGGERS_WORKER_DISPATCHER, whether the worker runs the dispatcher "
        "in a child process (an interpreter, a core, of its own) rather than a thread.",
    )
    checkpoint_interval_ms: int = Field(
        25,
        ge=0,
        description="Least time between the starts of two transactions of the event matcher, "
        "and of the dispatcher (each commits its turn's output, window or execution state and "
        "input offsets in one). Longer: fewer transactions for the broker at any load above a "
        "few events a second, and up to that much more latency per hop at light load; 0: the "
        "next transaction as soon as the last one commits. A full batch never waits for it.",
    )
    worker_metrics_port: int = Field(
        9464, description="Port of the worker's Prometheus `/metrics`; 0 turns it off."
    )
    worker_stall_seconds: float = Field(
        300.0,
        gt=0,
        description="A worker's /healthz answers 503 once a consumer group of it has not "
        "moved for this long while its lag grew.",
    )
    worker_health_interval_seconds: float = Field(
        10.0, gt=0, description="How often a worker reads its consumer groups' lag."
    )
    state_idle_seconds: float = Field(
        3600.0,
        ge=0,
        description="How long the state of a stateful trigger's key (a `group_by` value's "
        "window, a sequence's or a debounce's key) is kept once no event reaches it, on the "
        "worker's clock; longer for triggers that look further back (twice the window plus "
        "the cooldown, twice a sequence's `within`). Its record is then deleted, so ever new "
        "`group_by` values do not grow the state without end. 0: kept for ever.",
    )
    event_time_max_ahead_seconds: float = Field(
        300.0,
        gt=0,
        description="How far ahead of the worker's clock an event's time may be for a "
        "trigger that counts by event time (thresholds, followed_by, not_followed_by). "
        "Further ahead, the event is a dead letter: a window would take it as its newest "
        "event and count every event after it as late until that time.",
    )
    worker_stop_timeout_seconds: float = Field(
        30.0,
        gt=0,
        description="How long `triggers worker` may take to stop once asked (SIGTERM, "
        "Ctrl-C) before it exits anyway: with the broker gone, Faust's own stop waits "
        "for its producer without end. What it had not committed is done again by the "
        "next owner, as after a SIGKILL.",
    )
    metrics_trigger_label_limit: int = Field(
        100,
        ge=0,
        description="Triggers a process labels its per-trigger series with (the first it "
        'counts); the rest share `trigger_id="_other"`.',
    )
    metrics_trigger_ids: list[str] = Field(
        default_factory=list,
        description="Trigger ids always labelled on their own, beyond that limit (JSON list).",
    )
    runner_metrics_port: int = Field(
        0, description="Port of the reference runner's Prometheus `/metrics`; 0 turns it off."
    )
    api_keys: dict[str, str | ApiKey] = Field(
        default_factory=dict,
        description='API keys mapped to workspaces, JSON: {"k-alpha": "alpha"}, or to a '
        'workspace and a name: {"k-ci": {"workspace": "alpha", "name": "ci-bot"}}.',
    )
    operator_workspace: str = Field(
        "default",
        description="Workspace whose keys also see dead letters that name no workspace "
        "(e.g. malformed events on a shared topic).",
    )
    webhook_max_body_bytes: int = Field(
        1024 * 1024, ge=1, description="Largest webhook body accepted; larger ones get 413."
    )
    webhook_ack_timeout_seconds: float = Field(
        5.0, gt=0, description="How long the gateway waits for Kafka's ack before a 503."
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Proxies (CIDRs, JSON list) whose X-Forwarded-For the gateway believes.",
    )
    event_data_max_bytes: int = Field(
        65_536,
        ge=0,
        description="Largest event `data` (JSON bytes) a direct event fire puts in the agent's "
        "input; larger data is left out and the input's event says `data_truncated`.",
    )
    result_output_max_bytes: int = Field(
        262_144,
        ge=0,
        description="Largest runtime output (JSON bytes) an execution record keeps; a "
        "larger one is left out and the record says why in `output_left_out`.",
    )
    log_level: str = Field("INFO", description="Log level of every component.")
    log_format: Literal["text", "json"] = Field(
        "text", description="`text` for a terminal, `json` for one JSON object per line."
    )

    @model_validator(mode="after")
    def _kafka_security_is_whole(self) -> Settings:
        """A secured connection's settings, complete and pointing at files that exist."""
        protocol = self.kafka_security_protocol
        if protocol in (SecurityProtocol.SASL_PLAINTEXT, SecurityProtocol.SASL_SSL) and not (
            self.kafka_sasl_username and self.kafka_sasl_password
        ):
            raise ValueError(
                f"TRIGGERS_KAFKA_SECURITY_PROTOCOL={protocol} needs TRIGGERS_KAFKA_SASL_USERNAME "
                "and TRIGGERS_KAFKA_SASL_PASSWORD"
            )
        for name in ("ca", "certificate", "key"):
            path = getattr(self, f"kafka_ssl_{name}_location")
            if path is not None and not path.is_file():
                raise ValueError(f"TRIGGERS_KAFKA_SSL_{name.upper()}_LOCATION={path}: no such file")
        if (self.kafka_ssl_certificate_location is None) != (self.kafka_ssl_key_location is None):
            raise ValueError(
                "TRIGGERS_KAFKA_SSL_CERTIFICATE_LOCATION and TRIGGERS_KAFKA_SSL_KEY_LOCATION "
                "go together (a client certificate and its key)"
            )
        return self


def replication(settings: Settings) -> tuple[int, dict[str, str]]:
    """The replication factor to create a topic with (-1: the broker's default) and the
    topic config that goes with it: with N > 1 replicas, a write is acknowledged once N-1
    have it, so one broker can be down (a rolling restart) without refusing writes."""
    factor = settings.topic_replication_factor
    if factor is None:
        return -1, {}
    return factor, ({"min.insync.replicas": str(factor - 1)} if factor > 1 else {})


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return Settings()
