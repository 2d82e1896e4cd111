"""The product's exceptions. A user error says where, what, and how to fix it."""

from __future__ import annotations


class TriggersError(Exception):
    """Base of every error this package raises on purpose."""


class DefinitionError(TriggersError):
    """A trigger document is invalid.

    `problems` holds one line per problem, each naming the file (and line when known),
    the field path, what is wrong and what would be right.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class BadRecord(TriggersError):
    """A Kafka record the product cannot use; it becomes a dead letter with this reason."""


class KafkaUnavailable(TriggersError):
    """The broker did not answer in time."""


class RecordTooLarge(KafkaUnavailable):
    """The broker refused a record as larger than its topic takes: retrying the same
    record cannot help (HTTP 413, not 503)."""


class KafkaRefused(TriggersError):
    """The broker refused our credentials, or we refused its certificate: retrying cannot
    help; a setting must change (the message names it)."""


class TopicsRefused(TriggersError):
    """The broker would not create a topic as asked (e.g. more replicas than brokers)."""


class DataDirInUse(TriggersError):
    """Another worker on this machine already keeps its table state in this directory."""


class TriggerDisabled(TriggersError):
    """A run was asked for a trigger that is disabled."""
