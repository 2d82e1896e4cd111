"""The operator console in a real browser (Debian's Chromium, driven by Playwright)
against a real broker, worker, runner and `triggers serve`.

Screenshots go to $TRIGGERS_UI_SCREENSHOTS when set (the README's come from
`make screenshots`), else to the test's temporary folder.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from processor import topics
from tests.integration.kafka import Pipeline, start_serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without these, Chromium tries to reach Google's hosts at start, which this network refuses.
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

TRIGGERS = """
trigger:
  id: ui-demo
  name: Order alert
  workspace: alpha
  type: event
  event:
    pattern: order.flagged
    condition: {field: data.risk, operator: gte, value: 5}
  overlap: allow_all
  agent:
    id: reviewer
    input: {runner: {action: sleep, seconds: 2}}
---
trigger:
  id: ui-stuck
  name: Stuck job
  workspace: alpha
  type: event
  event: {pattern: job.stuck}
  agent:
    id: hanger
    input: {runner: {action: hang}}
---
trigger:
  id: beta-only
  name: Beta billing
  workspace: beta
  type: event
  event: {pattern: invoice.paid}
  agent: {id: billing}
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: `make browser` installs Debian's chromium package")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


def sign_in(page: Page, base: str, key: str) -> None:
    page.goto(f"{base}/ui/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Triggers")).to_be_visible()


def test_console_shows_a_fire_live_explains_and_keeps_workspaces_apart(
    pipeline: Pipeline, browser: Browser, tmp_path: Path
) -> None:
    shots = Path(os.environ.get("TRIGGERS_UI_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    (tmp_path / "t.yaml").write_text(TRIGGERS)
    pipeline.cli("apply", "-f", str(tmp_path / "t.yaml"))
    base = start_serve(pipeline, extra_env={"TRIGGERS_OPERATOR_WORKSPACE": "alpha"})
    pipeline.start_worker_and_runner()

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    sign_in(page, base, "k-alpha")
    cookie = next(c for c in page.context.cookies() if c["name"] == "triggers_ui_key")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    expect(page.get_by_role("link", name="Order alert")).to_be_visible()
    expect(page.get_by_text("Beta billing")).to_have_count(0)
    page.screenshot(path=shots / "triggers.png", full_page=True)

    # The executions page: a fire appears and reaches completed without a reload.
    page.get_by_role("link", name="Executions").click()
    page.evaluate("window.notReloaded = true")
    flagged = {"type": "order.flagged", "source": "shop", "id": "o-42", "data": {"risk": 9}}
    pipeline.produce(topics.EVENTS, orjson.dumps(flagged), key=b"orders")
    row = page.locator("#execution-rows tr[data-execution]").first
    expect(row).to_have_attribute("data-status", "running", timeout=60_000)
    expect(row).to_have_attribute("data-status", "completed", timeout=60_000)
    assert page.evaluate("window.notReloaded") is True
    page.screenshot(path=shots / "executions.png", full_page=True)

    row.get_by_role("link").last.click()
    expect(page.locator("#execution-status")).to_have_text("completed")
    timeline = page.locator(".timeline")
    for step in ("fired", "pending", "running", "completed"):
        expect(timeline).to_contain_text(step)
    page.screenshot(path=shots / "execution.png", full_page=True)

    page.goto(f"{base}/ui/triggers/ui-demo")
    expect(page.locator("#fires-chart canvas")).to_be_visible()
    expect(page.locator(".definition")).to_contain_text("pattern: order.flagged")
    page.screenshot(path=shots / "trigger.png", full_page=True)
    page.get_by_role("button", name="Disable").click()
    expect(page.locator("main .state").first).to_have_text("disabled")
    page.get_by_role("button", name="Enable").click()
    expect(page.locator("main .state").first).to_have_text("enabled")
    # Run now from the trigger's page: a manual run, asked for by the signed-in key.
    page.get_by_role("button", name="Run now").click()
    deadline = time.monotonic() + 60
    while True:
        runs = httpx.get(
            f"{base}/v1/triggers/ui-demo/executions",
            headers={"Authorization": "Bearer k-alpha"},
            timeout=10,
        ).json()["items"]
        manual = [r for r in runs if r["cause"]["type"] == "manual"]
        if manual:
            break
        assert time.monotonic() < deadline, runs
        time.sleep(0.5)
    assert manual[0]["cause"]["requested_by"] == "api:alpha"

    # Cancel a running execution from its page; the runtime confirms.
    pipeline.produce(topics.EVENTS, orjson.dumps({"type": "job.stuck", "source": "t", "id": "s1"}))
    page.goto(f"{base}/ui/executions?status=running")
    stuck = page.locator("#execution-rows tr[data-status='running']", has_text="Stuck job")
    expect(stuck).to_have_count(1, timeout=60_000)
    href = stuck.get_by_role("link").last.get_attribute("href")  # rows are replaced every 2 s
    page.goto(f"{base}{href}")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("#execution-status")).to_have_text("cancelled", timeout=30_000)
    # A finished execution can run again: a new one, with the same input, runs.
    page.get_by_role("button", name="Re-run").click()
    page.goto(f"{base}/ui/executions?status=running")
    rerun = page.locator("#execution-rows tr[data-status='running']", has_text="Stuck job")
    expect(rerun).to_have_count(1, timeout=60_000)
    assert rerun.get_by_role("link").last.get_attribute("href") != href

    page.get_by_role("link", name="Explain").click()
    page.get_by_label("Event (JSON)").fill(
        '{"type": "order.flagged", "source": "shop", "id": "o-43", "data": {"risk": 2}}'
    )
    page.get_by_role("button", name="Explain").click()
    report = page.locator("#explain-report")
    expect(report).to_contain_text("Order alert")
    expect(report).to_contain_text("condition_failed")
    expect(report).to_contain_text("FAIL data.risk")
    page.screenshot(path=shots / "explain.png", full_page=True)

    pipeline.produce(topics.EVENTS, b'{"type": "order.flagged", "data": ', key=b"orders")
    page.get_by_role("link", name="Dead letters").click()
    for _ in range(30):
        if page.locator("tbody tr td", has_text="not valid JSON").count():
            break
        page.wait_for_timeout(1000)
        page.reload()
    expect(page.locator("tbody")).to_contain_text("not valid JSON")
    page.screenshot(path=shots / "dead-letters.png", full_page=True)

    # Another workspace's key sees none of it.
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, base, "k-beta")
    expect(page.get_by_role("link", name="Beta billing")).to_be_visible()
    expect(page.get_by_text("Order alert")).to_have_count(0)
    page.goto(f"{base}/ui/executions")
    expect(page.locator("#execution-rows")).to_contain_text("No executions yet.")
    assert page.goto(f"{base}/ui/triggers/ui-demo").status == 404  # type: ignore[union-attr]
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()  # a page, not JSON
    expect(page.get_by_role("alert")).to_contain_text("no trigger ui-demo in workspace 'beta'")
    page.goto(f"{base}/ui/executions?status=bogus")
    expect(page.get_by_role("alert")).to_contain_text("status: Input should be 'pending'")
    page.get_by_role("link", name="Back to the triggers").click()
    expect(page.get_by_role("link", name="Beta billing")).to_be_visible()
    page.goto(f"{base}/ui/dead-letters")
    expect(page.locator("tbody")).to_contain_text("Nothing rejected.")
    page.goto(f"{base}/ui/explain")
    page.get_by_role("button", name="Explain").click()
    expect(page.locator("#explain-report")).to_contain_text("No trigger's pattern matches")

    assert requested and not [u for u in requested if "k-alpha" in u or "k-beta" in u]
    served = pipeline.log("serve")
    assert "k-alpha" not in served and "k-beta" not in served


def test_the_triggers_page_shows_fifty_a_page_reading_only_their_statuses(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    """A status per trigger was read at each 5 s refresh, and every trigger listed: 0.8 s
    with a thousand triggers. Now a page of 50, from the API's cursor; and past 200
    triggers the executions page asks for a trigger id instead of listing them all."""
    many = "---\n".join(
        f"trigger: {{id: many-{i:03d}, name: Many {i:03d}, workspace: alpha, type: event,"
        f" event: {{pattern: many.{i}}}, agent: {{id: a}}}}\n"
        for i in range(210)
    )
    (tmp_path / "many.yaml").write_text(many)
    pipeline.cli("apply", "-f", str(tmp_path / "many.yaml"))
    base = start_serve(pipeline)
    cookies = {"triggers_ui_key": "k-alpha"}
    deadline = time.monotonic() + 30
    while "Many 209" not in httpx.get(f"{base}/ui/", params={"q": "209"}, cookies=cookies).text:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    first = httpx.get(f"{base}/ui/", cookies=cookies).text
    assert first.count('href="/ui/triggers/many-') == 50 and "Many 049" in first
    assert ">Next page</a>" in first and "First page" not in first
    [next_page] = re.findall(r'href="(/ui/\?[^"]*after=[^"]*)">Next page', first)
    second = httpx.get(base + html.unescape(next_page), cookies=cookies).text
    assert second.count('href="/ui/triggers/many-') == 50 and "Many 050" in second
    assert ">First page</a>" in second and ">Next page</a>" in second
    only = httpx.get(f"{base}/ui/", params={"q": "many 20"}, cookies=cookies).text
    assert only.count('href="/ui/triggers/many-') == 10 and "Next page" not in only
    api = httpx.get(
        f"{base}/v1/triggers", params={"q": "MANY 00"}, headers={"Authorization": "Bearer k-alpha"}
    ).json()
    assert [t["name"] for t in api["items"]] == [f"Many 00{i}" for i in range(10)]
    executions = httpx.get(f"{base}/ui/executions", cookies=cookies).text
    assert '<input id="trigger" name="trigger" type="search"' in executions
