"""What one transaction costs on the local broker: the floor under each hop of the event
path, and the machine's own pauses under it.

An event's command waits for the matcher's commit and, in the dispatcher, for the
commit running when its fire came (processor/kafka/transactional.py); each of those is a
transaction like the ones timed here, with nothing of ours around it. Transactions run
back to back, as a busy loop's turns do: begin, `--records` records of `--bytes` over
the partitions of one topic, the position of an input partition
(`send_offsets_to_transaction`), commit. Timed per transaction: from `begin_transaction`
to the first record acknowledged (the partitions registered with the coordinator,
AddPartitionsToTxn) and to the commit's return. The producer is the loops' own
(`transactional_config`: lz4, linger 5 ms, `retry.backoff.ms`); with `--backoff` other
values of that retry are tried in alternating rounds, and `--spaced` adds rounds that
wait 20 ms between transactions, so the last one's markers are written before the next
begins (no CONCURRENT_TRANSACTIONS to retry).

With `--busy MS...`, more rounds run the same transactions while another thread of the
process runs Python in bursts of MS ms, letting go of the GIL for a moment between
them, as a loop handles a batch and then polls while its commit runs on a helper
thread (processor/kafka/transactional.py). confluent-kafka takes the GIL for every
record's delivery report, which the commit's flush serves: a commit then also waits for
the other thread's bursts (results in transactions_busy.json).

Then the machine: a process that only reads the clock, alone and with a second one for
the other core, the broker idle; every gap over 2 ms between two readings is time it
could have run and did not (the kernel's or the host's doing: it holds no lock and
allocates nothing). A pause like these lands whole on any step of the event path.

    .venv/bin/python bench/transactions.py [--transactions 400] [--rounds 3]
                                           [--backoff 10 1] [--spaced] [--busy 1 5]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from processor.config import Settings  # noqa: E402
from processor.kafka.clients import new_consumer, new_producer  # noqa: E402
from processor.kafka.transactional import transactional_config  # noqa: E402
from tests.integration.kafka import delete_topics  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from event_path import percentiles  # noqa: E402

BOOTSTRAP = os.environ.get("TRIGGERS_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
SPACING_SECONDS = 0.02
STALL_SECONDS = 5.0
STALL_MS = 2.0


class Topics:
    """An output topic of `partitions` and a one-partition input, deleted afterwards."""

    def __init__(self, partitions: int) -> None:
        self.name = f"bench-txn-{uuid.uuid4().hex[:8]}"
        self.input = f"{self.name}-in"
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP})  # alive until they exist
        created = admin.create_topics(
            [NewTopic(self.name, partitions, 1), NewTopic(self.input, 1, 1)]
        )
        for future in created.values():
            future.result(30)

    def delete(self) -> None:
        delete_topics(BOOTSTRAP, self.name)


def run_transactions(
    settings: Settings,
    topics: Topics,
    consumer: Consumer,
    backoff_ms: int,
    count: int,
    records: int,
    size: int,
    spaced: bool,
) -> dict[str, Any]:
    """`count` transactions by a new producer of the loops' configuration."""
    config = transactional_config(f"{topics.name}-{backoff_ms}-{uuid.uuid4().hex[:6]}")
    config["retry.backoff.ms"] = backoff_ms
    producer: Producer = new_producer(settings, **config)
    producer.init_transactions(30)
    metadata = consumer.consumer_group_metadata()
    value = b"x" * size
    acknowledged: list[float] = []

    def delivered(error: KafkaError | None, _message: Any) -> None:
        if error is None:
            acknowledged.append(time.perf_counter())

    first, whole = [], []
    for n in range(count):
        acknowledged.clear()
        started = time.perf_counter()
        producer.begin_transaction()
        for i in range(records):
            producer.produce(topics.name, key=b"%d" % i, value=value, on_delivery=delivered)
        producer.poll(0)
        producer.send_offsets_to_transaction([TopicPartition(topics.input, 0, n)], metadata, 30)
        producer.commit_transaction(30)
        ended = time.perf_counter()
        whole.append((ended - started) * 1000)
        first.append((min(acknowledged, default=ended) - started) * 1000)
        if spaced:
            time.sleep(SPACING_SECONDS)
    return {
        "first_acknowledged_ms": percentiles(first, also=(90,)),
        "transaction_ms": percentiles(whole, also=(90,)),
    }


@contextmanager
def busy_thread(burst_ms: float) -> Iterator[None]:
    """Another thread runs Python in bursts of `burst_ms` (none if 0), with a 50 µs sleep
    (the GIL let go) between them, for as long as the block runs."""
    if not burst_ms:
        yield
        return
    done = threading.Event()

    def work() -> None:
        total = 0
        while not done.is_set():
            until = time.perf_counter() + burst_ms / 1000
            while time.perf_counter() < until:
                total += sum(range(100))
            time.sleep(0.00005)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _spin(seconds: float, threshold_ms: float, out: Any) -> None:
    """Read the clock for `seconds`; put the gaps over `threshold_ms` (ms) on `out`."""
    gaps = []
    end = time.perf_counter() + seconds
    last = time.perf_counter()
    while last < end:
        now = time.perf_counter()
        if (now - last) * 1000 > threshold_ms:
            gaps.append((now - last) * 1000)
        last = now
    out.put(gaps)


def stalls(spinners: int) -> dict[str, Any]:
    """The gaps seen by each of `spinners` clock-reading processes run together."""
    queue: Any = multiprocessing.Queue()
    workers = [
        multiprocessing.Process(target=_spin, args=(STALL_SECONDS, STALL_MS, queue))
        for _ in range(spinners)
    ]
    for worker in workers:
        worker.start()
    found = [queue.get() for _ in workers]
    for worker in workers:
        worker.join()
    gaps = [gap for each in found for gap in each]
    return {
        "spinners": spinners,
        "seconds": STALL_SECONDS,
        "gaps_over_2ms_per_spinner": round(len(gaps) / spinners, 1),
        "stalled_ms_per_spinner": round(sum(gaps) / spinners, 1),
        "longest_ms": round(max(gaps, default=0.0), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=400, help="per round and variant")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--records", type=int, default=100, help="records per transaction")
    parser.add_argument("--bytes", type=int, default=1800, help="bytes per record")
    parser.add_argument("--partitions", type=int, default=0, help="0: TRIGGERS_TOPIC_PARTITIONS")
    parser.add_argument(
        "--backoff",
        type=int,
        nargs="+",
        help="retry.backoff.ms values to try (default: the loops' own)",
    )
    parser.add_argument("--spaced", action="store_true", help="also 20 ms between transactions")
    parser.add_argument(
        "--busy",
        type=float,
        nargs="+",
        default=[],
        help="also with a thread of the process busy in bursts of these many ms",
    )
    args = parser.parse_args()
    settings = Settings(kafka_bootstrap=BOOTSTRAP)
    own = int(transactional_config("x")["retry.backoff.ms"])
    backoffs = args.backoff or [own]
    topics = Topics(args.partitions or settings.topic_partitions)
    consumer = new_consumer(settings, f"{topics.name}-group")
    variants = [(backoff, False, 0.0) for backoff in backoffs]
    if args.spaced:
        variants += [(backoff, True, 0.0) for backoff in backoffs]
    variants += [(backoff, False, burst) for burst in args.busy for backoff in backoffs]
    rounds: dict[str, list[dict[str, Any]]] = {}
    try:
        for round_ in range(args.rounds):
            for backoff, spaced, burst in variants:
                name = f"backoff_{backoff}ms" + ("_spaced" if spaced else "")
                name += f"_busy_{burst:g}ms" if burst else ""
                with busy_thread(burst):
                    found = run_transactions(
                        settings,
                        topics,
                        consumer,
                        backoff,
                        args.transactions,
                        args.records,
                        args.bytes,
                        spaced,
                    )
                rounds.setdefault(name, []).append(found)
                print(f"{name} (round {round_ + 1}): {json.dumps(found)}", flush=True)
    finally:
        consumer.close()
        topics.delete()
    machine = [stalls(1), stalls(2)]
    for each in machine:
        print(f"stalls: {json.dumps(each)}", flush=True)
    results = {
        "machine": os.uname().nodename,
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "records_per_transaction": args.records,
        "busy_burst_ms": args.busy,
        "bytes_per_record": args.bytes,
        "partitions": args.partitions or settings.topic_partitions,
        "loops_retry_backoff_ms": own,
        "transactions_per_round": args.transactions,
        "rounds": rounds,
        "stalls": machine,
    }
    out = ROOT / "bench" / "results" / f"transactions{'_busy' if args.busy else ''}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
