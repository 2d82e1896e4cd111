"""`triggers`: run the components and manage triggers from the command line."""

from __future__ import annotations

import base64
import logging
import os
import sys
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import orjson
import typer
import yaml
from rich.console import Console
from rich.table import Table

from processor import topics
from processor.config import Settings, get_settings
from processor.definitions import store
from processor.definitions.endpoints import endpoint_problems, name_problems
from processor.definitions.loader import (
    Located,
    load_paths,
    parse_document,
    repeated_triggers,
)
from processor.definitions.model import TriggerDocument, document_json, warnings_for
from processor.errors import DefinitionError, TriggersError
from processor.logs import configure
from processor.messages import ExecutionRecord, ExecutionStatus
from processor.serde import MAX_NESTING, nesting, shallow

app = typer.Typer(
    help="Kafka event-trigger processor: start AI agents from schedules, webhooks and events.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
topics_app = typer.Typer(help="Manage the product's Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
letters_app = typer.Typer(
    help="Look at rejected records and send them back once fixed.", no_args_is_help=True
)
app.add_typer(letters_app, name="dead-letters")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class Output(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"
    ID = "id"
    """Only the ids (a trigger's `id`, an execution's `execution_id`), one per line."""


FilesOption = Annotated[
    list[Path], typer.Option("--file", "-f", help="Trigger file or directory (repeatable).")
]
OutputOption = Annotated[Output, typer.Option("--output", "-o", help="Output format.")]


def run() -> None:
    """The `triggers` console script: a broker or input problem that a command did not
    handle itself ends in one line on stderr and exit 1, never a traceback."""
    from processor.kafka.clients import LIBRDKAFKA_LOG

    # The client library's retry chatter would bury the one line that says what failed.
    LIBRDKAFKA_LOG.setLevel(logging.CRITICAL)
    from pydantic import ValidationError

    try:
        app()
    except ValidationError as exc:  # the settings (TRIGGERS_* variables)
        for problem in exc.errors():
            where = "".join(f"TRIGGERS_{p}".upper() for p in problem["loc"][:1])
            err.print(
                f"[red]error:[/red] {where + ': ' if where else ''}{problem['msg']}",
                highlight=False,
                markup=True,
            )
        sys.exit(1)
    except DefinitionError as exc:
        _print_problems(exc.problems)
        sys.exit(1)
    except TriggersError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, markup=True)
        sys.exit(1)


def _show_version(asked: bool) -> None:
    if asked:
        from processor import __version__

        out.print(f"triggers {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Kafka event-trigger processor: start AI agents from schedules, webhooks and events."""


def _settings() -> Settings:
    return get_settings()


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}", highlight=False, markup=True)
    return typer.Exit(code)


def _print(data: Any, output: Output) -> None:
    if output is Output.ID:
        for item in data if isinstance(data, list) else [data]:
            sys.stdout.write(
                f"{item.get('id') or item.get('execution_id') or item['trigger_id']}\n"
            )
    elif output is Output.JSON:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


# -- components ----------------------------------------------------------------------


@app.command()
def worker() -> None:
    """Run a worker: matchers and the dispatcher (foreground; SIGTERM or Ctrl-C stops)."""
    from processor.worker.app import run_worker

    settings = _settings()
    configure(settings.log_level, "worker", settings.log_format)
    try:
        run_worker(settings)
    except TriggersError as exc:
        raise _fail(str(exc)) from None


@app.command()
def dispatcher(
    ready_file: Annotated[
        Path | None, typer.Option(hidden=True, help="Created once the dispatcher consumes.")
    ] = None,
) -> None:
    """Run only the dispatcher, for workers started with TRIGGERS_WORKER_DISPATCHER=false
    (foreground; SIGTERM or Ctrl-C stops)."""
    from processor.worker.app import run_dispatcher

    settings = _settings()
    configure(settings.log_level, "dispatcher", settings.log_format)
    try:
        run_dispatcher(settings, ready_file)
    except TriggersError as exc:
        raise _fail(str(exc)) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Listen address [TRIGGERS_HTTP_HOST].")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port [TRIGGERS_HTTP_PORT].")] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Processes accepting on the port [TRIGGERS_HTTP_WORKERS]."),
    ] = None,
) -> None:
    """Run the HTTP service: webhooks, /v1 API, /healthz, /readyz, /metrics."""
    from processor.http.app import run_server

    settings = _settings()
    configure(settings.log_level, "serve", settings.log_format)
    run_server(
        settings,
        host or settings.http_host,
        port or settings.http_port,
        workers or settings.http_workers,
    )


@app.command()
def runner() -> None:
    """Run the reference agent runtime (echo, sleep, fail or hang on demand)."""
    from processor.runner.runtime import run_runner

    settings = _settings()
    configure(settings.log_level, "runner", settings.log_format)
    run_runner(settings)


@topics_app.command("create")
def topics_create(
    replication_factor: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Replicas of each topic, min.insync.replicas one less "
            "[TRIGGERS_TOPIC_REPLICATION_FACTOR; default: the broker's].",
        ),
    ] = None,
) -> None:
    """Create every topic the product needs; existing topics are left as they are."""
    from processor.kafka.admin import create_topics

    settings = _settings()
    if replication_factor is not None:
        settings = settings.model_copy(update={"topic_replication_factor": replication_factor})
    try:
        outcomes = create_topics(settings)
    except TriggersError as exc:
        raise _fail(str(exc)) from None
    for outcome in outcomes:
        verb = "created" if outcome.created else "exists "
        out.print(f"{verb} {outcome.name} ({outcome.partitions} partitions)", highlight=False)


# -- events --------------------------------------------------------------------------


@app.command()
def emit(
    event_type: Annotated[
        str | None, typer.Argument(help="Event type, e.g. error.database.")
    ] = None,
    source: Annotated[str, typer.Option(help="Event source.")] = "cli",
    data: Annotated[str, typer.Option(help="Event data, JSON.")] = "{}",
    event_id: Annotated[str | None, typer.Option("--id", help="Event id (default: new).")] = None,
    workspace: Annotated[str | None, typer.Option(help="workspace_id attribute.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A whole event as JSON ('-' = stdin).")
    ] = None,
    topic: Annotated[str | None, typer.Option(help="Topic (default: events).")] = None,
    count: Annotated[
        int, typer.Option(min=1, help="How many such events (each with its own id).")
    ] = 1,
) -> None:
    """Produce a domain event (CloudEvents JSON) and wait for the broker's ack."""
    from processor.kafka.clients import produce_and_wait

    settings = _settings()
    if file is not None:
        raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _fail(f"{file}: not valid JSON: {exc}") from None
    elif event_type:
        if not source:
            raise _fail("--source is empty; name where the event comes from, e.g. --source shop")
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise _fail(f"--data: not valid JSON: {exc}") from None
        event = {
            "specversion": "1.0",
            "id": event_id or str(uuid.uuid4()),
            "type": event_type,
            "source": source,
            "data": payload,
        }
        if workspace:
            event["workspace_id"] = workspace
    else:
        raise _fail("give an event type, or --file with a whole event")
    if nesting(event) > MAX_NESTING:
        raise _fail(
            f"the event nests deeper than {MAX_NESTING} levels, which workers refuse (a fire "
            "could not carry it); flatten its data"
        )
    name = topic or topics.topic_name(topics.EVENTS, settings)
    events = [event] if count == 1 else [_numbered(event, n) for n in range(1, count + 1)]
    try:
        produce_and_wait(settings, name, [(None, orjson.dumps(one)) for one in events])
    except TriggersError as exc:
        raise _fail(str(exc)) from None
    for one in events:
        out.print(f"emitted {one.get('type')} id={one.get('id')} to {name}", highlight=False)


def _numbered(event: dict[str, Any], n: int) -> dict[str, Any]:
    """The n-th of `--count` copies: its own id (`<id>-<n>`), the same everything else."""
    return {**event, "id": f"{event.get('id') or uuid.uuid4()}-{n}"}


@app.command()
def explain(
    file: Annotated[Path, typer.Option("--file", "-f", help="The event as JSON ('-' = stdin).")],
    output: OutputOption = Output.TABLE,
) -> None:
    """Show, for each candidate trigger, why this event did or did not fire it."""
    from processor.matching.decode import decode_event
    from processor.matching.explain import explain_with_state

    settings = _settings()
    raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    try:
        event = decode_event(raw, [], topic="explain", partition=0, offset=0, timestamp_ms=None)
    except TriggersError as exc:
        raise _fail(f"{file}: {exc}") from None
    try:
        documents = [
            document.model_copy(update={"id": trigger_id})
            for trigger_id, document in _parsed(store.read_all(settings)).items()
        ]
        report = explain_with_state(settings, documents, event)
    except TriggersError as exc:
        raise _fail(str(exc)) from None
    if output is not Output.TABLE:
        _print([r.as_json() for r in report], output)
        return
    if not report:
        out.print(f"no trigger's pattern matches type {event.type!r}", highlight=False)
    for item in report:
        out.print(f"[bold]{item.name}[/bold] ({item.trigger_id}): {item.verdict.value}")
        out.print(f"  pattern {item.pattern!r} matches {event.type!r}", highlight=False)
        out.print(
            f"  source {event.source!r}: {'ok' if item.source_ok else 'not accepted'}",
            highlight=False,
        )
        for test in item.tests:
            mark = "ok  " if test["matched"] else "FAIL"
            actual = "no such field" if test.get("missing") else f"actual: {test['actual']!r}"
            out.print(
                f"  {mark} {test['field']} {test['test']} ({actual})",
                highlight=False,
                markup=False,
            )
        if item.window is not None:
            w = item.window
            out.print(
                f"  window: {w['count']} of {w['count_threshold']} in {w['window_seconds']:g}s"
                f" (group {w['group']!r}; the count is before this event)",
                highlight=False,
            )
            if w.get("mended"):
                out.print(f"  mended: {w['mended']}", highlight=False, markup=False)
            if w.get("late"):
                out.print(f"  late: {w['late_reason']}", highlight=False, markup=False)
            if w.get("decision"):
                out.print(f"  this event: {w['decision']}", highlight=False, markup=False)
        if item.sequence is not None and "reason" in item.sequence:
            out.print(
                f"  {item.sequence['kind']}: {item.sequence['reason']}",
                highlight=False,
                markup=False,
            )
        if item.dead_letter is not None:
            out.print(f"  dead letter: {item.dead_letter}", highlight=False, markup=False)


@app.command()
def executions(
    trigger: Annotated[
        str | None, typer.Argument(help="Trigger id or name (default: all).")
    ] = None,
    status: Annotated[ExecutionStatus | None, typer.Option(help="Only this status.")] = None,
    follow: Annotated[bool, typer.Option("--follow", help="Keep printing changes.")] = False,
    output: OutputOption = Output.TABLE,
) -> None:
    """Show execution records (newest first), from trigger-executions."""
    from processor.kafka.follower import Follower
    from processor.serde import from_json

    settings = _settings()
    latest, _ = _read_executions(settings)
    trigger_id = _executions_of(settings, trigger, latest.values()) if trigger else None
    name = topics.topic_name(topics.TRIGGER_EXECUTIONS, settings)

    def wanted(record: ExecutionRecord) -> bool:
        return (trigger_id is None or record.trigger_id == trigger_id) and (
            status is None or record.status.value == status
        )

    def line(record: ExecutionRecord) -> str:
        when = record.triggered_at.isoformat(timespec="seconds")
        extra = record.error_message or record.reason or ""
        status_ = record.status.value
        return f"{when}  {status_:9}  {record.execution_id}  {record.trigger_name}  {extra}"

    shown = sorted(
        (r for r in latest.values() if wanted(r)), key=lambda r: r.triggered_at, reverse=True
    )
    if output is not Output.TABLE:
        _print([r.model_dump(mode="json", exclude_none=True) for r in shown], output)
    else:
        for record in shown:
            out.print(line(record), highlight=False, markup=False)
    if not follow:
        return
    import threading

    out.file.flush()

    def printed(message: Any) -> None:
        """Print each change newer than what is shown: the follower reads the topic from
        its start, so it skips what the listing showed and catches what changed since."""
        if message.value() is None:
            return
        record = from_json(ExecutionRecord, message.value())
        shown_record = latest.get(record.execution_id)
        if shown_record is not None and record.updated_at <= shown_record.updated_at:
            return
        latest[record.execution_id] = record
        if wanted(record):
            out.print(line(record), highlight=False, markup=False)
            out.file.flush()  # a pipe or file would otherwise hold the lines back

    follower = Follower(settings, name, printed)
    follower.start()
    err.print("following changes (Ctrl-C stops)", highlight=False)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        follower.stop()


@app.command("run")
def run_now(
    trigger: Annotated[str, typer.Argument(help="Trigger id or name.")],
    input_: Annotated[
        str | None,
        typer.Option("--input", help="JSON object merged over the trigger's own input."),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="The same key never starts a second run (default: every call runs)."),
    ] = None,
) -> None:
    """Start a trigger's agent now (cause `manual`), whatever its type; prints the
    execution id. `triggers executions TRIGGER` then shows the run."""
    import getpass

    from processor.kafka.clients import produce_and_wait
    from processor.matching.fires import manual_fire
    from processor.serde import to_json

    settings = _settings()
    extra = _json_object(input_, "--input") if input_ else {}
    trigger_id, raw = _find(settings, trigger)
    document = parse_document(raw, f"trigger {trigger_id}").model_copy(update={"id": trigger_id})
    fire = manual_fire(document, extra, f"cli:{getpass.getuser()}", idempotency_key)
    produce_and_wait(
        settings,
        topics.topic_name(topics.TRIGGER_FIRES, settings),
        [(trigger_id.encode(), to_json(fire))],
    )
    out.print(f"started {document.name} execution_id={fire.execution_id}", highlight=False)


@app.command()
def backfill(
    trigger: Annotated[str, typer.Argument(help="A schedule trigger's id or name.")],
    from_: Annotated[datetime, typer.Option("--from", help="First scheduled time included.")],
    to: Annotated[datetime, typer.Option("--to", help="Scheduled times before this one.")],
    overlap: Annotated[
        str | None,
        typer.Option(help="Overlap policy for these fires instead of the trigger's own."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the fires; start nothing.")
    ] = False,
) -> None:
    """Every fire the schedule would have made for scheduled times in [--from, --to) (a
    time without a zone is UTC), through the trigger's concurrency and overlap policy.
    Times that already ran, or a repeated backfill, start nothing new."""
    import getpass

    from processor.definitions.model import OverlapPolicy
    from processor.errors import TriggerDisabled
    from processor.kafka.clients import produce_and_wait
    from processor.matching.schedules import NotBackfillable, backfill_fires
    from processor.serde import to_json

    settings = _settings()
    try:
        policy = OverlapPolicy(overlap) if overlap else None
    except ValueError:
        choices = ", ".join(p.value for p in OverlapPolicy)
        raise _fail(f"--overlap {overlap!r}: use one of {choices}") from None
    trigger_id, raw = _find(settings, trigger)
    document = parse_document(raw, f"trigger {trigger_id}").model_copy(update={"id": trigger_id})
    try:
        fires = backfill_fires(document, from_, to, f"cli:{getpass.getuser()}", policy)
    except (NotBackfillable, TriggerDisabled) as exc:
        raise _fail(str(exc)) from None
    latest, _ = _read_executions(settings)
    fresh = [fire for fire in fires if fire.execution_id not in latest]
    starting = {fire.execution_id for fire in fresh}
    if not dry_run and fresh:
        produce_and_wait(
            settings,
            topics.topic_name(topics.TRIGGER_FIRES, settings),
            [(trigger_id.encode(), to_json(fire)) for fire in fresh],
        )
    for fire in fires:
        if fire.execution_id not in starting:
            verb = "ran already"
        else:
            verb = "would fire" if dry_run else "firing"
        out.print(
            f"{fire.input['scheduled_time']}  {verb}  execution_id={fire.execution_id}",
            highlight=False,
        )
    out.print(
        f"{len(fires)} scheduled times, {len(fresh)} {'to start' if dry_run else 'started'}",
        highlight=False,
    )


@app.command()
def rerun(
    execution_id: Annotated[
        str | None, typer.Argument(help="The execution to run again (or use --trigger).")
    ] = None,
    trigger: Annotated[
        str | None, typer.Option(help="Re-run this trigger's executions of --status.")
    ] = None,
    status: Annotated[str, typer.Option(help="With --trigger: failed or timed_out.")] = "failed",
    since: Annotated[
        datetime | None, typer.Option(help="With --trigger: triggered at or after.")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(help="With --trigger: triggered before.")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List them; start nothing.")] = False,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="With an execution id: the same key never starts a second run (default: "
            "every call runs; a bulk re-run's ids follow from its status and range)."
        ),
    ] = None,
) -> None:
    """Run an execution again with the same input (cause `rerun`), or every failed (or
    timed-out) execution of a trigger in a time range; prints the new execution ids."""
    import getpass

    from processor.kafka.clients import produce_and_wait
    from processor.matching.fires import TooManyReruns, bulk_rerun_fires, rerun_fire
    from processor.messages import ExecutionStatus
    from processor.serde import to_json

    settings = _settings()
    if (execution_id is None) == (trigger is None):
        raise _fail("give an execution id, or --trigger (with --status, --since, --until)")
    if status not in ("failed", "timed_out"):
        raise _fail(f"--status {status!r}: use failed or timed_out")
    latest, _ = _read_executions(settings)
    original = latest.get(execution_id) if execution_id is not None else None
    if execution_id is not None and original is None:
        raise _fail(f"no execution {execution_id} in trigger-executions")
    trigger_id, raw = _find(settings, original.trigger_id if original else str(trigger))
    document = parse_document(raw, f"trigger {trigger_id}").model_copy(update={"id": trigger_id})
    who = f"cli:{getpass.getuser()}"
    try:
        if original is not None:
            chosen = [(original, rerun_fire(document, original, who, idempotency_key))]
        else:
            mine = [r for r in latest.values() if r.trigger_id == trigger_id]
            wanted = ExecutionStatus(status)
            chosen = bulk_rerun_fires(document, mine, wanted, since, until, who)
    except (TriggersError, TooManyReruns) as exc:
        raise _fail(str(exc)) from None
    fires = [fire for _, fire in chosen]
    if not dry_run and fires:
        produce_and_wait(
            settings,
            topics.topic_name(topics.TRIGGER_FIRES, settings),
            [(trigger_id.encode(), to_json(fire)) for fire in fires],
        )
    verb = "would re-run" if dry_run else "re-running"
    for rerun_of, fire in chosen:
        out.print(
            f"{verb} {rerun_of.execution_id} as execution_id={fire.execution_id}",
            highlight=False,
        )
    if not chosen:
        out.print("nothing to re-run", highlight=False)


@letters_app.command("list")
def letters_list(
    limit: Annotated[int, typer.Option(min=1, help="Most letters shown.")] = 20,
    output: OutputOption = Output.TABLE,
) -> None:
    """The latest dead letters, newest first: id, when, from where, why."""
    from processor.deadletters import decoded, latest_letters

    letters = latest_letters(_settings())
    shown = letters[:limit]
    if output is not Output.TABLE:
        _print(
            [
                {
                    "id": i,
                    "redriven": redriven,
                    **letter.model_dump(mode="json", exclude={"value", "key", "headers"}),
                }
                for i, letter, redriven in shown
            ],
            output,
        )
        return
    for i, letter, redriven in shown:
        mark = "redriven" if redriven else ""
        source = f"{letter.topic}[{letter.partition}]@{letter.offset}"
        value = (decoded(letter.value) or b"")[:60].decode(errors="replace")
        out.print(
            f"{i:>8}  {letter.at.isoformat(timespec='seconds')}  {source}  {letter.component}:"
            f" {letter.error}  {mark}  {value!r}",
            highlight=False,
            markup=False,
        )
    if not shown:
        out.print("no dead letters", highlight=False)


@letters_app.command("show")
def letters_show(
    letter: Annotated[str, typer.Argument(help="The letter's id (partition:offset).")],
) -> None:
    """One dead letter, whole: where it came from, why, its headers and value."""
    from processor.deadletters import NotRedrivable, decoded, read_letter

    try:
        found, redriven = read_letter(_settings(), letter)
    except NotRedrivable as exc:
        raise _fail(str(exc)) from None
    shown = found.model_dump(mode="json")
    shown["key"] = (decoded(found.key) or b"").decode(errors="replace") if found.key else None
    shown["value"] = (decoded(found.value) or b"").decode(errors="replace")
    shown["headers"] = {
        name: (decoded(data) or b"").decode(errors="replace") for name, data in found.headers or []
    }
    shown["redriven"] = redriven
    sys.stdout.write(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode() + "\n")


@letters_app.command("redrive")
def letters_redrive(
    letter: Annotated[str, typer.Argument(help="The letter's id (partition:offset).")],
) -> None:
    """Send a dead letter's record back to its topic, byte for byte with its headers, once
    (after the definition or the producer that made it fail was fixed)."""
    import getpass

    from processor.deadletters import NotRedrivable, redrive

    try:
        done = redrive(_settings(), letter, f"cli:{getpass.getuser()}")
    except NotRedrivable as exc:
        raise _fail(str(exc)) from None
    out.print(f"redriven {done.letter} to {done.topic}[{done.partition}]", highlight=False)


@app.command()
def sign(
    trigger: Annotated[str, typer.Argument(help="A webhook trigger's id or name.")],
    body: Annotated[str, typer.Argument(help="The request body, exactly as it will be sent.")],
    secret: Annotated[
        str | None,
        typer.Option(help="The secret's value (default: the environment variable it names)."),
    ] = None,
) -> None:
    """Print the headers that authenticate BODY for a webhook trigger, one per line, as
    its sender would set them: `triggers sign T "$body" | curl -H @- --data "$body" URL`."""
    import time

    from processor.language.signatures import AuthType, signed_headers
    from processor.webhooks.gateway import SECRET_NAME, scheme_for

    settings = _settings()
    trigger_id, raw = _find(settings, trigger)
    document = parse_document(raw, f"trigger {trigger_id}")
    auth = document.webhook.authentication if document.webhook else None
    if auth is None:
        raise _fail(f"{document.name!r} is not a webhook trigger with authentication")
    if secret is None:
        reference = auth.secret_references[0] if auth.secret_references else ""
        match = SECRET_NAME.match(reference)
        secret = os.environ.get(match.group(1)) if match else None
        if not secret:
            raise _fail(
                f"{document.name!r} takes its secret from {reference}, which is not set in "
                "this shell; export it with the gateway's value, or pass --secret"
            )
    if auth.type is AuthType.BEARER:
        headers = {auth.header or "authorization": f"Bearer {secret}"}
    elif auth.type is AuthType.BASIC:
        token = base64.b64encode(f"{auth.username or ''}:{secret}".encode()).decode()
        headers = {auth.header or "authorization": f"Basic {token}"}
    else:
        try:
            headers = signed_headers(
                auth.type, scheme_for(auth), secret, body.encode(), time.time(), str(uuid.uuid4())
            )
        except ValueError as exc:
            raise _fail(f"{document.name!r}: {exc}") from None
    for name, value in headers.items():
        out.print(f"{name}: {value}", highlight=False, markup=False)


def _json_object(text: str, option: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise _fail(f"{option}: not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise _fail(f'{option}: give a JSON object, like \'{{"region": "eu"}}\'')
    try:
        return shallow(value)
    except ValueError as exc:
        raise _fail(f"{option}: {exc}") from None


def _read_executions(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """`read_latest`, or the CLI's one-line failure when Kafka cannot be read."""
    from processor.executions.history import read_latest

    try:
        return read_latest(settings)
    except TriggersError as exc:
        raise _fail(str(exc)) from None


@app.command()
def status(
    trigger: Annotated[str, typer.Argument(help="Trigger id or name.")],
    output: OutputOption = Output.YAML,
) -> None:
    """Show whether a trigger is enabled, disabled or paused by its circuit breaker
    (and why), its last fire, runs in the last hour and, for schedules, the next fire."""
    from datetime import datetime

    from processor.dispatch.state import Failures
    from processor.executions.status import trigger_status

    settings = _settings()
    trigger_id, raw = _find(settings, trigger)
    document = parse_document(raw, f"trigger {trigger_id}")
    latest, failures = _read_executions(settings)
    history = sorted(
        (r for r in latest.values() if r.trigger_id == trigger_id),
        key=lambda r: r.triggered_at,
        reverse=True,
    )
    found = trigger_status(
        document, failures.get(trigger_id, Failures()), history, datetime.now(UTC)
    )
    _print(
        found.model_dump(mode="json", exclude_none=True),
        Output.YAML if output is Output.TABLE else output,
    )


# -- trigger definitions -------------------------------------------------------------


@app.command()
def validate(files: FilesOption) -> None:
    """Check trigger files without applying them; exit 1 with every problem found."""
    try:
        located = load_paths(files)
    except DefinitionError as exc:
        _print_problems(exc.problems)
        raise typer.Exit(1) from None
    _warn_if_empty(located, files)
    documents = [
        (item.document.resolved(_settings().default_workspace), item.source) for item in located
    ]
    problems = (
        repeated_triggers(documents)
        + name_problems(documents, [])
        + endpoint_problems(documents, [])
    )
    if problems:
        _print_problems(problems)
        raise typer.Exit(1)
    for item in located:
        out.print(f"valid   {item.document.name} ({item.source})", highlight=False)
        _print_warnings(item.source, item.document)


@app.command()
def apply(
    files: FilesOption,
    dry_run: Annotated[bool, typer.Option(help="Show what would change; write nothing.")] = False,
    prune: Annotated[
        bool,
        typer.Option(help="Also delete triggers of the same workspaces that the files omit."),
    ] = False,
) -> None:
    """Create or update the triggers in files; exit 0 only if every document applied."""
    settings = _settings()
    try:
        located = load_paths(files)
        current = store.read_all(settings)
    except DefinitionError as exc:
        _print_problems(exc.problems)
        raise typer.Exit(1) from None
    except TriggersError as exc:
        raise _fail(str(exc)) from None
    _warn_if_empty(located, files)
    documents = [
        (item.document.resolved(settings.default_workspace), item.source) for item in located
    ]
    existing = list(_parsed(current).values())
    problems = (
        repeated_triggers(documents)
        + name_problems(documents, existing)
        + endpoint_problems(documents, existing)
    )
    if problems:
        _print_problems(problems)
        raise typer.Exit(1)
    changes: dict[str, TriggerDocument | None] = {}
    report = []
    for document, source in documents:
        _print_warnings(source, document)
        previous = current.get(document.trigger_id)
        if previous == document_json(document):
            report.append(("unchanged", document.name, document.trigger_id))
            continue
        report.append(
            ("created" if previous is None else "updated", document.name, document.trigger_id)
        )
        changes[document.trigger_id] = document
    if prune:
        workspaces = {document.workspace for document, _ in documents}
        applied = {document.trigger_id for document, _ in documents}
        for trigger_id, raw in current.items():
            if raw.get("workspace") in workspaces and trigger_id not in applied:
                changes[trigger_id] = None
                report.append(("deleted", str(raw.get("name")), trigger_id))
    if changes and not dry_run:
        try:
            store.write(settings, changes)
        except TriggersError as exc:
            raise _fail(str(exc)) from None
    suffix = " (dry run)" if dry_run else ""
    for verb, name, trigger_id in report:
        out.print(f"{verb:9} {name}  id={trigger_id}{suffix}", highlight=False)


def _warn_if_empty(located: list[Located], files: list[Path]) -> None:
    if not located:
        named = ", ".join(str(f) for f in files)
        err.print(
            f"warning: no trigger documents in {named} (files ending .yaml, .yml or .json)",
            highlight=False,
            markup=False,
        )


def _print_warnings(source: str, document: TriggerDocument) -> None:
    for warning in warnings_for(document):
        err.print(f"warning: {source}: {warning}", highlight=False, markup=False)


def _print_problems(problems: list[str]) -> None:
    for problem in problems:
        err.print(problem, highlight=False, markup=False)


def _parsed(documents: dict[str, dict[str, Any]]) -> dict[str, TriggerDocument]:
    """Stored documents as models (an unreadable one is skipped: it cannot clash)."""
    parsed = {}
    for trigger_id, raw in documents.items():
        try:
            parsed[trigger_id] = parse_document(raw, trigger_id).model_copy(
                update={"id": trigger_id}
            )
        except DefinitionError:
            continue
    return parsed


def _executions_of(settings: Settings, ref: str, records: Iterable[ExecutionRecord]) -> str:
    """The id of the trigger whose executions to show: a trigger's, by id or name, or a
    deleted one's, whose executions remain."""
    try:
        documents = store.read_all(settings)
    except TriggersError as exc:
        raise _fail(str(exc)) from None
    found = _named(documents, ref)
    if found is not None:
        return found[0]
    records = list(records)
    if any(record.trigger_id == ref for record in records):
        return ref
    deleted = {record.trigger_id for record in records if record.trigger_name == ref}
    if len(deleted) == 1:
        return deleted.pop()
    if deleted:
        raise _fail(f"{len(deleted)} deleted triggers were named {ref!r}; use the id")
    raise _fail(
        f"no trigger with id or name {ref!r}, nor executions of one; `triggers list` shows them"
    )


def _find(settings: Settings, ref: str) -> tuple[str, dict[str, Any]]:
    found = _named(store.read_all(settings), ref)
    if found is None:
        raise _fail(f"no trigger with id or name {ref!r}; `triggers list` shows them")
    return found


def _named(documents: dict[str, dict[str, Any]], ref: str) -> tuple[str, dict[str, Any]] | None:
    """The trigger with this id, or else the one with this name; None if there is none."""
    if ref in documents:
        return ref, documents[ref]
    by_name = [(tid, doc) for tid, doc in documents.items() if doc.get("name") == ref]
    if len(by_name) > 1:
        raise _fail(f"{len(by_name)} triggers are named {ref!r}; use the id")
    return by_name[0] if by_name else None


@app.command("list")
def list_(output: OutputOption = Output.TABLE) -> None:
    """List every trigger."""
    try:
        documents = store.read_all(_settings())
    except TriggersError as exc:
        raise _fail(str(exc)) from None
    if output is not Output.TABLE:
        _print(list(documents.values()), output)
        return
    table = Table("ID", "NAME", "TYPE", "ENABLED", "WORKSPACE", "AGENT")
    for tid, doc in sorted(documents.items(), key=lambda item: item[1].get("name", "")):
        table.add_row(
            tid,
            doc.get("name"),
            doc.get("type"),
            str(doc.get("enabled")),
            doc.get("workspace"),
            doc.get("agent", {}).get("id"),
        )
    out.print(table)


@app.command()
def get(
    trigger: Annotated[str, typer.Argument(help="Trigger id or name.")],
    output: OutputOption = Output.YAML,
) -> None:
    """Show one trigger's document."""
    _, document = _find(_settings(), trigger)
    _print(document, Output.YAML if output is Output.TABLE else output)


@app.command()
def delete(trigger: Annotated[str, typer.Argument(help="Trigger id or name.")]) -> None:
    """Delete a trigger."""
    settings = _settings()
    trigger_id, document = _find(settings, trigger)
    store.write(settings, {trigger_id: None})
    out.print(f"deleted {document.get('name')} id={trigger_id}", highlight=False)


def _set_enabled(trigger: str, enabled: bool) -> None:
    settings = _settings()
    trigger_id, raw = _find(settings, trigger)
    document = parse_document({**raw, "enabled": enabled}, f"trigger {trigger_id}")
    store.write(settings, {trigger_id: document})
    out.print(
        f"{'enabled' if enabled else 'disabled'} {document.name} id={trigger_id}", highlight=False
    )


@app.command()
def enable(trigger: Annotated[str, typer.Argument(help="Trigger id or name.")]) -> None:
    """Enable a trigger."""
    _set_enabled(trigger, True)


@app.command()
def disable(trigger: Annotated[str, typer.Argument(help="Trigger id or name.")]) -> None:
    """Disable a trigger (it stays defined but never fires)."""
    _set_enabled(trigger, False)


if __name__ == "__main__":  # `python -m processor.cli.main`: how a worker starts its dispatcher
    run()
