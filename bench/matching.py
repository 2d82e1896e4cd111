"""Matching cost per event against the number of active event triggers.

Builds registries of 10, 1k, 10k and 100k event triggers (exact types, globs on many
prefixes, a few RE2 regexes, sources and conditions), then times `match_event` on a
stream of events. The fleet grows the way real ones do, by covering more event types:
the number of domains grows with the number of triggers, so each event has about the
same number of truly matching triggers (reported as `candidates`) at every size. What
is left to grow is the cost of finding them, which is what the index must keep flat.
A linear scan that checks every trigger's pattern is measured in the same run on the
same machine as the baseline; figures are reported as ratios, since this machine is
shared and noisy.

    .venv/bin/python bench/matching.py            # or: make bench
"""

from __future__ import annotations

import json
import random
import sys
import time
from functools import partial
from pathlib import Path

from processor.definitions.loader import parse_document
from processor.definitions.registry import Registry
from processor.language.patterns import compile_pattern
from processor.matching.events import match_event
from processor.messages import DomainEvent

SIZES = (10, 1_000, 10_000, 100_000)
EVENTS = 2_000
VERBS = ["created", "updated", "deleted", "failed", "paid", "shipped", "error", "timeout"]


def domains(size: int) -> list[str]:
    return [f"svc{i}" for i in range(max(2, size // 4))]


def trigger(i: int, rng: random.Random, names: list[str]) -> dict:
    domain, verb = rng.choice(names), rng.choice(VERBS)
    kind = i % 20
    if kind < 12:
        pattern = f"{domain}.{verb}"
    elif kind < 19:
        pattern = f"{domain}.*"
    else:
        pattern = f"re:{domain}\\.(failed|error)" if i % 200 == 19 else f"{domain}.*.{verb}"
    event: dict = {"pattern": pattern, "source": ["api", "worker"]}
    if i % 3 == 0:
        event["condition"] = {"severity": ">= high"}
    return {"name": f"t{i}", "type": "event", "event": event, "agent": {"id": "a"}}


def events(rng: random.Random, names: list[str]) -> list[DomainEvent]:
    return [
        DomainEvent(
            id=str(i),
            type=f"{rng.choice(names)}.{rng.choice(VERBS)}",
            source="api",
            data={"severity": rng.choice(["low", "high", "critical"])},
        )
        for i in range(EVENTS)
    ]


def scan_all(predicates: list, event: DomainEvent) -> list[bool]:
    return [match(event.type) for match in predicates]


def timed(function, stream) -> float:
    started = time.perf_counter()
    for event in stream:
        function(event)
    return (time.perf_counter() - started) / len(stream)


def main() -> None:
    rng = random.Random(7)
    rows = []
    for size in SIZES:
        names = domains(size)
        stream = events(rng, names)
        documents = [
            parse_document(trigger(i, rng, names), "bench").resolved("default") for i in range(size)
        ]
        registry = Registry()
        for document in documents:
            registry.put(document)
        predicates = [compile_pattern(d.event.pattern) for d in documents if d.event]
        indexed = timed(partial(match_event, registry), stream)
        sample = stream[:200] if size >= 10_000 else stream
        scan = timed(partial(scan_all, predicates), sample)
        candidates = sum(len(registry.event_patterns.candidates(e.type)) for e in stream) / len(
            stream
        )
        rows.append(
            {
                "triggers": size,
                "candidates": candidates,
                "indexed_us": indexed * 1e6,
                "scan_us": scan * 1e6,
            }
        )
        print(
            f"{size:>7} triggers: {candidates:4.1f} candidates/event, indexed "
            f"{indexed * 1e6:7.1f} us/event, linear pattern scan {scan * 1e6:9.1f} us/event",
            file=sys.stderr,
        )
    base = rows[0]["indexed_us"]
    for row in rows:
        row["indexed_vs_10_triggers"] = row["indexed_us"] / base
        row["scan_vs_indexed"] = row["scan_us"] / row["indexed_us"]
    out = Path(__file__).parent / "results" / "matching.json"
    out.write_text(json.dumps({"events": EVENTS, "rows": rows}, indent=2) + "\n")
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
