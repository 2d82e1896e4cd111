"""Routes of the operator console. Each handler calls `/v1` and renders a template;
requests from htmx (`HX-Request`) get only the part of the page that changes."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import httpx
import orjson
import yaml
from fastapi import APIRouter, Form, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

HERE = Path(__file__).parent
COOKIE = "triggers_ui_key"
FINISHED = {"completed", "failed", "cancelled", "timed_out", "skipped"}
STATUSES = ["pending", "running", "completed", "failed", "cancelled", "timed_out", "skipped"]
CHART_OUTCOMES = ["completed", "failed", "skipped", "other"]

router = APIRouter(prefix="/ui", include_in_schema=False)
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["when"] = lambda v: (v or "")[:19].replace("T", " ")
templates.env.filters["pretty"] = lambda v: orjson.dumps(v, option=orjson.OPT_INDENT_2).decode()


class SignedOut(Exception):
    """No key in the cookie, or the API no longer accepts it."""


class Api:
    """`/v1` as the signed-in key sees it."""

    def __init__(self, request: Request, key: str | None = None) -> None:
        key = key or request.cookies.get(COOKIE)
        if not key:
            raise SignedOut
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=request.app),
            base_url="http://console",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = await self.client.request(method, path, **kwargs)
        if answer.status_code == 401:
            raise SignedOut
        if answer.status_code >= 400:
            detail = answer.json().get("detail") if answer.content else None
            raise HTTPException(answer.status_code, detail or answer.reason_phrase)
        return answer.json() if answer.content else None

    async def get(self, path: str, **params: Any) -> Any:
        return await self.call("GET", path, params={k: v for k, v in params.items() if v})

    async def executions(self, trigger_id: str, status: str | None = None) -> list[dict[str, Any]]:
        page = await self.get(f"/v1/triggers/{trigger_id}/executions", limit=200, status=status)
        items: list[dict[str, Any]] = page["items"]
        return items


def _page(request: Request, template: str, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context)


def _partial(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def signed_out_redirect(request: Request, exc: Exception) -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    if _partial(request):  # htmx follows redirects in place; make it load the page instead
        response.headers["HX-Redirect"] = "/ui/login"
    return response


TITLES = {
    400: "Not accepted",
    403: "Not allowed",
    404: "Not found",
    409: "Refused",
    422: "Not accepted",
}


def error_page(request: Request, exc: Exception) -> Response:
    """An error on a console page as a page (the API's own errors stay JSON): what went
    wrong, in the API's words, and a way back."""
    if isinstance(exc, RequestValidationError):
        status, detail = 422, exc.errors()
    else:
        assert isinstance(exc, StarletteHTTPException)
        status, detail = exc.status_code, exc.detail
    if isinstance(detail, list | tuple):  # validation errors, the console's or the API's
        message = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}"
            if isinstance(e, dict) and "loc" in e and "msg" in e
            else str(e)
            for e in detail
        )
    else:
        message = str(detail)
    title = TITLES.get(status, "Something went wrong")
    response = _page(request, "error.html", title=title, message=message, nav="error")
    response.status_code = status
    return response


# -- sign-in ---------------------------------------------------------------------------


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _page(request, "login.html", error=None)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request, key: Annotated[str, Form()]) -> Response:
    try:
        async with Api(request, key) as api:
            await api.get("/v1/triggers", limit=1)
    except SignedOut:
        page = _page(request, "login.html", error="That key is not accepted.")
        page.status_code = 401
        return page
    response = RedirectResponse("/ui/", status_code=303)
    response.set_cookie(
        COOKIE,
        key,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/ui",
        max_age=12 * 3600,
    )
    return response


@router.post("/logout")
def logout() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response


# -- triggers --------------------------------------------------------------------------


TRIGGER_CHOICES = 200
"""The executions page lists triggers to filter by up to this many; beyond, it asks for
an id (a list of ten thousand is no choice, and took the page 0.45 s to build)."""
TRIGGERS_PER_PAGE = 50
"""Rows of the triggers page: its status, one call per row, is read again every 5 s."""


async def _trigger_rows(
    api: Api, q: str, type_: str, state: str, after: str
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the workspace's triggers that match (the API filters them, from its
    cursor `after`), each with its status, and the next page's cursor (None at the end).
    Only the rows shown are read: the page stays quick with thousands of triggers."""
    page = await api.get(
        "/v1/triggers",
        limit=TRIGGERS_PER_PAGE,
        cursor=after or None,
        type=type_,
        q=q,
        state=state,
    )
    rows = [
        {"trigger": t, "status": await api.get(f"/v1/triggers/{t['id']}/status")}
        for t in page["items"]
    ]
    return rows, page["next_cursor"]


@router.get("")
def console_root() -> RedirectResponse:
    """`/ui` as people type it: the console lives under `/ui/`."""
    return RedirectResponse("/ui/", status_code=307)


@router.get("/", response_class=HTMLResponse)
async def triggers_page(
    request: Request,
    q: str = "",
    type: str = "",
    state: str = "",
    after: str = "",
) -> Response:
    async with Api(request) as api:
        rows, next_cursor = await _trigger_rows(api, q, type, state, after)
    template = "_trigger_rows.html" if _partial(request) else "triggers.html"
    return _page(
        request,
        template,
        rows=rows,
        next_cursor=next_cursor,
        after=after,
        filters=urlencode({"q": q, "type": type, "state": state}),
        q=q,
        type=type,
        state=state,
        nav="triggers",
    )


@router.get("/triggers/{trigger_id}", response_class=HTMLResponse)
async def trigger_page(request: Request, trigger_id: str) -> Response:
    async with Api(request) as api:
        trigger = await api.get(f"/v1/triggers/{trigger_id}")
        status = await api.get(f"/v1/triggers/{trigger_id}/status")
        history = await api.executions(trigger_id)
    return _page(
        request,
        "trigger.html",
        trigger=trigger,
        status=status,
        definition=yaml.safe_dump({"trigger": trigger}, sort_keys=False),
        chart=orjson.dumps(fires_chart(history, datetime.now(UTC))).decode(),
        statuses=STATUSES,
        nav="triggers",
    )


@router.post("/triggers/{trigger_id}/{action}")
async def trigger_action(request: Request, trigger_id: str, action: str) -> Response:
    """Enable, disable, or run now (cause `manual`, `requested_by` the signed-in key's
    name); back to the trigger's page."""
    if action not in ("enable", "disable", "run"):
        raise HTTPException(404, "no such action")
    async with Api(request) as api:
        await api.call("POST", f"/v1/triggers/{quote(trigger_id)}/{action}")
    return RedirectResponse(f"/ui/triggers/{quote(trigger_id)}", status_code=303)


def fires_chart(history: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    """Fires per hour over the last 24 hours, by outcome, as uPlot's columns."""
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=23)
    counts: Counter[tuple[int, str]] = Counter()
    for record in history:
        at = datetime.fromisoformat(record["triggered_at"])
        if at < start:
            continue
        hour = int((at - start).total_seconds() // 3600)
        outcome = record["status"] if record["status"] in CHART_OUTCOMES else "other"
        counts[hour, outcome] += 1
    hours = [int((start + timedelta(hours=h)).timestamp()) for h in range(24)]
    return {
        "x": hours,
        "series": {o: [counts[h, o] for h in range(24)] for o in CHART_OUTCOMES},
    }


# -- executions ------------------------------------------------------------------------


@router.get("/executions", response_class=HTMLResponse)
async def executions_page(request: Request, status: str = "", trigger: str = "") -> Response:
    """Every trigger's executions (or one's), newest first; htmx polls for the rows."""
    partial = _partial(request)
    async with Api(request) as api:
        page = await api.get("/v1/executions", limit=100, status=status, trigger_id=trigger)
        # the trigger filter's choices: a list up to 200 triggers, a trigger id beyond
        first: dict[str, Any] = {"items": [], "next_cursor": None}
        if not partial:
            first = await api.get("/v1/triggers", limit=TRIGGER_CHOICES)
    template = "_execution_rows.html" if partial else "executions.html"
    return _page(
        request,
        template,
        rows=page["items"],
        status=status,
        trigger=trigger,
        triggers=first["items"],
        trigger_by_id=first["next_cursor"] is not None,
        statuses=STATUSES,
        nav="executions",
    )


@router.get("/triggers/{trigger_id}/executions/{execution_id}", response_class=HTMLResponse)
async def execution_page(request: Request, trigger_id: str, execution_id: str) -> Response:
    async with Api(request) as api:
        record = await api.get(f"/v1/triggers/{trigger_id}/executions/{execution_id}")
    template = "_execution_detail.html" if _partial(request) else "execution.html"
    return _page(
        request,
        template,
        record=record,
        timeline=timeline(record),
        finished=record["status"] in FINISHED,
        nav="executions",
    )


@router.post("/triggers/{trigger_id}/executions/{execution_id}/cancel")
async def cancel(request: Request, trigger_id: str, execution_id: str) -> Response:
    async with Api(request) as api:
        await api.call("POST", f"/v1/triggers/{trigger_id}/executions/{execution_id}/cancel")
    return RedirectResponse(
        f"/ui/triggers/{quote(trigger_id)}/executions/{quote(execution_id)}", status_code=303
    )


@router.post("/triggers/{trigger_id}/executions/{execution_id}/rerun")
async def rerun(request: Request, trigger_id: str, execution_id: str) -> Response:
    """Run a finished execution again; back to the trigger's page, where the new
    execution shows up among its runs as soon as the dispatcher has it."""
    async with Api(request) as api:
        await api.call("POST", f"/v1/triggers/{trigger_id}/executions/{execution_id}/rerun")
    return RedirectResponse(f"/ui/triggers/{quote(trigger_id)}", status_code=303)


def timeline(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(time, state, detail) of each change the record's timestamps show, in order."""
    steps = [(record.get("triggered_at"), "fired", _cause_text(record.get("cause", {})))]
    if record.get("issued_at"):
        steps.append((record["issued_at"], "pending", "command sent to agent-runs"))
    elif record["status"] == "pending":
        steps.append((record["updated_at"], "waiting", record.get("reason") or ""))
    if record.get("started_at"):
        steps.append((record["started_at"], "running", "the runtime started it"))
    if record.get("retry_at"):
        steps.append((record["updated_at"], "retrying", record.get("reason") or ""))
    if record["status"] in FINISHED:
        detail = record.get("error_message") or record.get("reason") or ""
        steps.append((record.get("completed_at") or record["updated_at"], record["status"], detail))
    return [(at or "", state, detail) for at, state, detail in steps]


def _cause_text(cause: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in cause.items() if not isinstance(v, dict | list))


# -- explain and dead letters ----------------------------------------------------------


@router.get("/explain", response_class=HTMLResponse)
def explain_page(request: Request) -> Response:
    Api(request)  # signed in?
    example = '{"type": "error.database", "source": "system", "data": {"severity": "high"}}'
    return _page(request, "explain.html", event=example, report=None, error=None, nav="explain")


@router.post("/explain", response_class=HTMLResponse)
async def explain(request: Request, event: Annotated[str, Form()]) -> Response:
    report, error = None, None
    async with Api(request) as api:
        try:
            report = await api.call("POST", "/v1/explain", content=event.encode())
        except HTTPException as exc:
            error = str(exc.detail)
    template = "_explain_report.html" if _partial(request) else "explain.html"
    return _page(request, template, event=event, report=report, error=error, nav="explain")


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters_page(request: Request) -> Response:
    async with Api(request) as api:
        letters = await api.get("/v1/dead-letters", limit=100)
    return _page(request, "dead_letters.html", letters=letters, nav="dead-letters")


@router.post("/dead-letters/{letter_id}/redrive")
async def redrive_letter(request: Request, letter_id: str) -> Response:
    async with Api(request) as api:
        await api.call("POST", f"/v1/dead-letters/{quote(letter_id)}/redrive")
    return RedirectResponse("/ui/dead-letters", status_code=303)
