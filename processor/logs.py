"""Logging for every component: one line per record, to stderr.

`TRIGGERS_LOG_FORMAT=text` (the default, for a terminal) or `json`: one JSON object per
line with `ts`, `level`, `component`, `logger`, `message`, and `trigger_id` /
`execution_id` when the line is about one (`log.info(..., extra=about(trigger_id=...))`),
for a log pipeline to index.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any

import orjson

IDS = ("trigger_id", "execution_id")


class JsonLines(logging.Formatter):
    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "component": self.component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in IDS:
            value = getattr(record, name, None)
            if value:
                entry[name] = str(value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def about(trigger_id: str | None = None, execution_id: str | None = None) -> dict[str, Any]:
    """`extra` for a log line about a trigger or an execution."""
    return {"trigger_id": trigger_id, "execution_id": execution_id}


def configure(level: str, component: str, format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if format == "json":
        handler.setFormatter(JsonLines(component))
    else:
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)-7s {component} %(name)s: %(message)s")
        )
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)


def faust_logging_config(level: str, component: str, format: str) -> dict[str, Any] | None:
    """What Faust's worker configures logging with (it replaces the root handlers when it
    starts): JSON lines to stderr, or None for Faust's own text format."""
    if format != "json":
        return None
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonLines, "component": component}},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"level": level.upper(), "handlers": ["default"]},
    }
