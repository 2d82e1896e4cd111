"""The JSON Schema of a trigger file, generated from the models (`make schemas`).

Editors use `schemas/trigger.schema.json` to validate and autocomplete trigger YAML;
a test checks that the checked-in file matches the models.
"""

from __future__ import annotations

import sys
from typing import Any

import orjson

from processor.definitions.model import TriggerDocument


def trigger_file_schema() -> dict[str, Any]:
    document = TriggerDocument.model_json_schema(by_alias=False)
    definitions = document.pop("$defs", {})
    definitions["TriggerDocument"] = document
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Trigger file",
        "description": "One trigger: `trigger:` holding the document (see docs/architecture.md).",
        "type": "object",
        "properties": {"trigger": {"$ref": "#/$defs/TriggerDocument"}},
        "required": ["trigger"],
        "additionalProperties": False,
        "$defs": definitions,
    }


def main() -> None:
    sys.stdout.write(
        orjson.dumps(
            trigger_file_schema(), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        ).decode()
        + "\n"
    )


if __name__ == "__main__":
    main()
