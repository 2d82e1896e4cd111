"""Kafka event-trigger processor for AI agents."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("kafka-agent-triggers")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+source"
