"""What two triggers cannot share: a webhook endpoint (a global path on the gateway), and
a name within a workspace (what the CLI and the console name a trigger by)."""

from __future__ import annotations

from collections.abc import Iterable

from processor.definitions.model import TriggerDocument

RESERVED_PREFIXES = ("/v1/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/ui")


def endpoint_of(document: TriggerDocument) -> tuple[str, str] | None:
    """(method, custom path) of a webhook trigger with a custom endpoint."""
    if document.webhook is None or document.webhook.endpoint is None:
        return None
    return document.webhook.method, document.webhook.endpoint.rstrip("/") or "/"


def endpoint_problems(
    candidates: Iterable[tuple[TriggerDocument, str]], existing: Iterable[TriggerDocument]
) -> list[str]:
    """Problems with the custom endpoints of `candidates` (document, where it came from):
    a reserved path, or a (method, path) another trigger already uses."""
    owners: dict[tuple[str, str], TriggerDocument] = {}
    replaced = set()
    batch = list(candidates)
    for document, _ in batch:
        replaced.add(document.trigger_id)
    for document in existing:
        endpoint = endpoint_of(document)
        if endpoint is not None and document.trigger_id not in replaced:
            owners[endpoint] = document
    problems = []
    for document, source in batch:
        endpoint = endpoint_of(document)
        if endpoint is None:
            continue
        method, path = endpoint
        where = f"{source}: webhook.endpoint"
        if path.startswith(RESERVED_PREFIXES) or path in {p.rstrip("/") for p in RESERVED_PREFIXES}:
            problems.append(f"{where}: {path} is reserved by the service; choose another path")
            continue
        owner = owners.get(endpoint)
        if owner is not None and owner.trigger_id != document.trigger_id:
            problems.append(
                f"{where}: {method} {path} is already used by trigger {owner.name!r} "
                f"(id {owner.trigger_id}); choose another path or method"
            )
        else:
            owners[endpoint] = document
    return problems


def name_problems(
    candidates: Iterable[tuple[TriggerDocument, str]], existing: Iterable[TriggerDocument]
) -> list[str]:
    """`candidates` (resolved documents, where each came from) that claim a workspace and
    name another trigger, of another id, already has or is given in the same batch. A
    trigger keeping the name it has is no new claim: two that shared a name before this
    check stay writable (enable, disable, edit) until one is renamed."""
    batch = list(candidates)
    replaced = {document.trigger_id for document, _ in batch}
    stored = {document.trigger_id: (document.workspace, document.name) for document in existing}
    owners = {
        (document.workspace, document.name): document
        for document in existing
        if document.trigger_id not in replaced
    }
    problems = []
    for document, source in batch:
        claim = (document.workspace, document.name)
        if stored.get(document.trigger_id) == claim:
            continue
        owner = owners.setdefault(claim, document)
        if owner.trigger_id != document.trigger_id:
            problems.append(
                f"{source}: name: {document.name!r} is already the name of trigger "
                f"{owner.trigger_id} in workspace {document.workspace!r}; names are unique "
                "within a workspace: choose another"
            )
    return problems
