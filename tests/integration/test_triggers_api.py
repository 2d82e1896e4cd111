"""`/v1/triggers` against the real broker: CRUD, workspaces, errors, OpenAPI."""

from __future__ import annotations

import subprocess
import time

import httpx

from processor import topics
from tests.integration.kafka import ROOT, Pipeline, reading, settle, start_serve

ALPHA = {"Authorization": "Bearer k-alpha"}
BETA = {"Authorization": "Bearer k-beta"}


def event_trigger(name: str, pattern: str = "deploy.*", **extra: object) -> dict:
    return {
        "name": name,
        "type": "event",
        "event": {"pattern": pattern},
        "agent": {"id": "echo"},
        "overlap": "allow_all",  # no runtime finishes these runs
        **extra,
    }


def test_crud_and_workspace_isolation(pipeline: Pipeline) -> None:
    base = start_serve(pipeline)
    with httpx.Client(base_url=base, timeout=20) as http:
        created = http.post("/v1/triggers", json=event_trigger("Deploys"), headers=ALPHA)
        assert created.status_code == 201, created.text
        trigger = created.json()
        tid = trigger["id"]
        assert trigger["workspace"] == "alpha" and trigger["enabled"] is True
        assert (
            http.post("/v1/triggers", json=event_trigger("Deploys"), headers=ALPHA).status_code
            == 409
        )

        # Beta sees nothing of alpha's, on every route.
        assert http.get("/v1/triggers", headers=BETA).json() == {"items": [], "next_cursor": None}
        for method, path, body in [
            ("GET", f"/v1/triggers/{tid}", None),
            ("PATCH", f"/v1/triggers/{tid}", {"enabled": False}),
            ("DELETE", f"/v1/triggers/{tid}", None),
            ("POST", f"/v1/triggers/{tid}/disable", None),
            ("POST", f"/v1/triggers/{tid}/enable", None),
        ]:
            assert http.request(method, path, json=body, headers=BETA).status_code == 404, (
                method,
                path,
            )
        assert (
            http.put(f"/v1/triggers/{tid}", json=event_trigger("Mine"), headers=BETA).status_code
            == 409
        )
        claimed = http.post(
            "/v1/triggers", json=event_trigger("X", workspace="alpha"), headers=BETA
        )
        assert claimed.status_code == 403

        # Alpha changes its own.
        patched = http.patch(
            f"/v1/triggers/{tid}", json={"event": {"pattern": "release.*"}}, headers=ALPHA
        )
        assert patched.status_code == 200 and patched.json()["event"]["pattern"] == "release.*"
        assert http.post(f"/v1/triggers/{tid}/disable", headers=ALPHA).json()["enabled"] is False
        assert http.get(f"/v1/triggers/{tid}", headers=ALPHA).json()["enabled"] is False
        assert http.post(f"/v1/triggers/{tid}/enable", headers=ALPHA).json()["enabled"] is True
        replaced = http.put(
            f"/v1/triggers/{tid}", json=event_trigger("Deploys", "ship.*"), headers=ALPHA
        )
        assert replaced.status_code == 200 and replaced.json()["event"]["pattern"] == "ship.*"
        assert http.delete(f"/v1/triggers/{tid}", headers=ALPHA).status_code == 204
        assert http.get(f"/v1/triggers/{tid}", headers=ALPHA).status_code == 404

    # What the API wrote is what the topic holds (the CLI reads the topic).
    assert pipeline.cli("list", "-o", "json").stdout.strip() == "[]"


def test_pagination_is_stable_and_complete(pipeline: Pipeline) -> None:
    base = start_serve(pipeline)
    with httpx.Client(base_url=base, timeout=20) as http:
        for i in range(5):
            assert (
                http.post("/v1/triggers", json=event_trigger(f"t{i}"), headers=ALPHA).status_code
                == 201
            )
        names, cursor = [], None
        while True:
            params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = http.get("/v1/triggers", params=params, headers=ALPHA).json()
            names += [t["name"] for t in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert names == ["t0", "t1", "t2", "t3", "t4"]
        assert (
            http.get("/v1/triggers", params={"cursor": "garbage"}, headers=ALPHA).status_code == 400
        )


def test_errors_teach(pipeline: Pipeline) -> None:
    base = start_serve(pipeline)
    with httpx.Client(base_url=base, timeout=20) as http:
        assert http.get("/v1/triggers").status_code == 401
        assert http.get("/v1/triggers", headers={"Authorization": "Bearer nope"}).status_code == 401
        bad = http.post("/v1/triggers", json={**event_trigger("x"), "enabeld": True}, headers=ALPHA)
        assert bad.status_code == 422
        assert bad.json()["detail"]["problems"] == [
            "body: enabeld: unknown field; did you mean `enabled`?"
        ]
        not_json = http.post("/v1/triggers", content=b"{nope", headers=ALPHA)
        assert not_json.status_code == 400 and "not valid JSON" in not_json.json()["detail"]
        hook = {
            "name": "h",
            "type": "webhook",
            "webhook": {"endpoint": "/hooks/a"},
            "agent": {"id": "a"},
        }
        assert http.post("/v1/triggers", json=hook, headers=ALPHA).status_code == 201
        clash = http.post("/v1/triggers", json={**hook, "name": "h2"}, headers=BETA)
        assert clash.status_code == 409
        assert (
            "POST /hooks/a is already used by trigger 'h'" in clash.json()["detail"]["problems"][0]
        )
        twin = http.post("/v1/triggers", json={**event_trigger("h"), "id": "h-two"}, headers=ALPHA)
        assert twin.status_code == 409
        assert (
            "body: name: 'h' is already the name of trigger" in twin.json()["detail"]["problems"][0]
        )
        elsewhere = {**event_trigger("h"), "id": "h-beta"}
        assert http.post("/v1/triggers", json=elsewhere, headers=BETA).status_code == 201


def test_openapi_is_served_and_schemathesis_finds_no_server_errors(pipeline: Pipeline) -> None:
    base = start_serve(pipeline)
    spec = httpx.get(f"{base}/openapi.json").json()
    assert "/v1/triggers/{trigger_id}" in spec["paths"]
    assert "TriggerDocument" in spec["components"]["schemas"]
    run = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "st"),
            "run",
            f"{base}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--header",
            "Authorization: Bearer k-alpha",
            "--generation-deterministic",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]


def test_changes_reach_the_worker_and_every_gateway_within_one_second(pipeline: Pipeline) -> None:
    base = start_serve(pipeline)
    other_replica = start_serve(pipeline, name="serve-2")
    pipeline.start("worker", name="worker")
    pipeline.wait_ready("worker", "dispatcher restored")
    with (
        httpx.Client(base_url=base, timeout=20) as http,
        reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as runs,
    ):
        tid = http.post("/v1/triggers", json=event_trigger("Live"), headers=ALPHA).json()["id"]
        time.sleep(1.0)
        pipeline.emit({"id": "e1", "type": "deploy.a", "source": "s"})
        runs(lambda cs: len(cs) == 1, timeout=60)

        def after_one_second(change: httpx.Response, expect_other: object) -> None:
            assert change.status_code == 200
            time.sleep(1.0)
            seen = httpx.get(f"{other_replica}/v1/triggers/{tid}", headers=ALPHA)
            assert (seen.json() if seen.status_code == 200 else None) == expect_other

        disabled = http.post(f"/v1/triggers/{tid}/disable", headers=ALPHA)
        after_one_second(disabled, disabled.json())
        pipeline.emit({"id": "e2", "type": "deploy.b", "source": "s"})

        edited = http.patch(
            f"/v1/triggers/{tid}",
            json={"enabled": True, "event": {"pattern": "ship.*"}},
            headers=ALPHA,
        )
        after_one_second(edited, edited.json())
        pipeline.emit({"id": "e3", "type": "deploy.c", "source": "s"})  # old pattern
        pipeline.emit({"id": "e4", "type": "ship.d", "source": "s"})  # new pattern
        runs(lambda cs: len(cs) == 2, timeout=60)

        deleted = http.delete(f"/v1/triggers/{tid}", headers=ALPHA)
        assert deleted.status_code == 204
        time.sleep(1.0)
        assert httpx.get(f"{other_replica}/v1/triggers/{tid}", headers=ALPHA).status_code == 404
        pipeline.emit({"id": "e5", "type": "ship.e", "source": "s"})
        commands = settle(runs, 3)
    assert [c["cause"]["event_id"] for c in commands] == ["e1", "e4"]
