"""CPU cost of the event path per event, in process, without a broker.

The event matcher's and the dispatcher's `handle` run on the bench's Error Handler mix
(bench/event_path.py: every event an error, 60% high, 1,000 other triggers), fed with
`confluent_kafka.Message` objects built here and writing to a `Turn` (which keeps what
it is given until a transaction would begin), whose records are then handed to a
librdkafka producer that never connects, as a loop's turn is when its transaction begins
(since 2026-12-06 evening; figures before that leave the hand-over out). What this
measures is our own code per event, the part a profile can move; `bench/event_path.py`
measures the whole path on the broker. Also what the dispatcher's state grows by per
execution (`dispatcher_kb_per_fire`, from the first run: later ones reuse what it freed).

    .venv/bin/python bench/hot_path.py [--events 100000] [--profile out.prof] [--mix sparse]
                                       [--repeat N] [--high-share 0..1] [--chunk N]
                                       [--pause-ms MS]

`--chunk N` hands the matcher each turn of 2,000 events N at a time, as a loop below full
load does (it takes in what has come, a poll at a time, while the last commit runs): what
each `handle` call costs beyond its events. `--pause-ms` sleeps that long (untimed) after
each of those calls, as the loop waits for the next records below full load: what the
same work costs run in short bursts.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Message, Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import event_path  # noqa: E402

from processor.config import Settings  # noqa: E402
from processor.definitions.loader import load_paths  # noqa: E402
from processor.definitions.registry import Registry  # noqa: E402
from processor.dispatch.dispatcher import Dispatcher  # noqa: E402
from processor.kafka.transactional import Turn  # noqa: E402
from processor.worker.app import collect_less_often  # noqa: E402
from processor.worker.event_matcher import EventMatcher  # noqa: E402

BATCH = 2000


def registry(others: int) -> Registry:
    found = Registry()
    handler = ROOT / "examples" / "error-handler.yaml"
    path = Path("/tmp") / "hot-path-handler.yaml"
    path.write_text(handler.read_text() + "  overlap: allow_all\n")
    for located in load_paths([path]):
        found.put(located.document.resolved("default"))
    if others:
        path = Path("/tmp") / "hot-path-others.yaml"
        path.write_text(event_path.others(others))
        for located in load_paths([path]):
            found.put(located.document.resolved("default"))
    return found


def messages(topic: str, count: int, seed: int) -> list[Message]:
    now_ms = int(time.time() * 1000)
    return [
        Message(
            topic=topic,
            partition=0,
            offset=n,
            key=b"errors",
            value=orjson.dumps(event),
            timestamp=(1, now_ms + n),
        )
        for n, event in enumerate(event_path.events(count, seed))
    ]


def run(
    count: int, others: int, profile: str | None, chunk: int = BATCH, pause: float = 0.0
) -> dict[str, Any]:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", topic_prefix="hot.", app_id="hot")
    matcher = EventMatcher(settings, registry(others), threading.Event())
    matcher.matches_partitions = 1
    matcher.owned_matches = {0}
    dispatcher = Dispatcher(settings)
    inputs = messages(matcher.topics[0], count, 7)
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    # A turn's records are handed to librdkafka as its transaction begins (`Turn.send`):
    # here to a producer that never connects, emptied (`purge`) after each turn, untimed.
    sink = Producer({"bootstrap.servers": "127.0.0.1:1", "log_level": 0})
    fired: list[dict[str, Any]] = []
    matching = 0.0
    for at in range(0, len(inputs), BATCH):
        out = Turn()  # what the loops hand to `handle`: records kept until a transaction
        turn = inputs[at : at + BATCH]
        for part in range(0, len(turn), chunk):
            began = time.perf_counter()
            matcher.handle(turn[part : part + chunk], out)
            matching += time.perf_counter() - began
            if pause:
                time.sleep(pause)
        began = time.perf_counter()
        matcher.checkpoint(out)  # a turn per batch, as in a backlog
        out.send(sink)
        matching += time.perf_counter() - began
        sink.purge()
        sink.poll(0)
        fired += [record for topic, record in out.records if topic == matcher.fires_topic]
    fires = [
        Message(topic=dispatcher.fires_topic, partition=0, offset=n, **record)
        for n, record in enumerate(fired)
    ]
    del fired, out
    commands, dispatching, dispatched_out = 0, 0.0, Turn()
    grown_from = event_path.rss_bytes(os.getpid())
    for at in range(0, len(fires), 500):
        # A turn's records go once it is sent, as in the loop; what the state keeps stays.
        dispatched_out = Turn()
        began = time.perf_counter()
        dispatcher.handle(fires[at : at + 500], dispatched_out)
        dispatched_out.send(sink)
        dispatching += time.perf_counter() - began
        sink.purge()
        sink.poll(0)
        commands += sum(1 for topic, _ in dispatched_out.records if topic == dispatcher.runs_topic)
    del dispatched_out
    grown = event_path.rss_bytes(os.getpid()) - grown_from
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    return {
        "events": count,
        "fires": len(fires),
        "commands": commands,
        "matcher_us_per_event": round(matching / count * 1e6, 2),
        "dispatcher_us_per_fire": round(dispatching / max(1, len(fires)) * 1e6, 2),
        "total_us_per_event": round((matching + dispatching) / count * 1e6, 2),
        # What the dispatcher's state keeps per execution (its record and indexes), as the
        # process grew: no runtime finishes runs here, so it keeps every one.
        "dispatcher_kb_per_fire": round(grown / max(1, len(fires)) / 1024, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--others", type=int, default=1000)
    parser.add_argument("--mix", choices=["errors", "sparse"], default="errors")
    parser.add_argument(
        "--high-share",
        type=float,
        default=event_path.HIGH_SHARE,
        help="share of high-severity errors (1: every event is counted by the window, "
        "0: every event fails the condition); results are then not saved",
    )
    parser.add_argument("--profile", help="write a cProfile of both loops here")
    parser.add_argument(
        "--chunk",
        type=int,
        default=BATCH,
        help=f"events per matcher `handle` call within each turn of {BATCH} (results are "
        "then not saved)",
    )
    parser.add_argument(
        "--pause-ms",
        type=float,
        default=0.0,
        help="sleep this long (untimed) after each matcher `handle` call (results are then "
        "not saved)",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run this many times and keep each figure's least (on a shared machine the "
        "others are the neighbours' load)",
    )
    args = parser.parse_args()
    collect_less_often()  # as the worker and the dispatcher process do
    event_path.MIX = args.mix
    mixed, event_path.HIGH_SHARE = event_path.HIGH_SHARE, args.high_share
    if not 1 <= args.chunk <= BATCH:
        parser.error(f"--chunk must be between 1 and {BATCH}")
    if args.pause_ms < 0:
        parser.error("--pause-ms must be 0 or more")
    pause = args.pause_ms / 1000
    runs = [
        run(args.events, args.others, args.profile, args.chunk, pause) for _ in range(args.repeat)
    ]
    found = {key: min(r[key] for r in runs) for key in runs[0]}
    # Later runs reuse what the first one's state freed: its growth is the one to read.
    found["dispatcher_kb_per_fire"] = runs[0]["dispatcher_kb_per_fire"]
    if args.repeat > 1:
        found["repeats"] = args.repeat
    if args.high_share != mixed:
        found["high_share"] = args.high_share
    if args.chunk != BATCH:
        found["chunk"] = args.chunk
    if pause:
        found["pause_ms"] = args.pause_ms
    print(json.dumps(found))
    as_is = args.chunk == BATCH and not pause
    if args.high_share == mixed and not args.profile and as_is:
        out = (
            ROOT / "bench" / "results" / f"hot_path{'' if args.mix == 'errors' else '_sparse'}.json"
        )
        out.write_text(json.dumps(found, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
