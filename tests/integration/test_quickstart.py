"""The README's quickstart, read from the README and run as written against `make run`.

`deploy/run-local.sh` (what `make run` runs) starts the worker, the HTTP service and the
runner on this test's topics; then the quickstart block runs in bash, line by line as a
user pastes it. Only the port changes (`localhost:8080` becomes this test's port), and a
`triggers executions` line is repeated until its runs completed, as a user would look
again a moment later.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request

from tests.integration.kafka import ROOT, Pipeline
from tests.integration.test_cli_and_serve import free_port

MARKER = "<!-- quickstart:"
# How many completed runs each `triggers executions` line waits for.
RUNS = {"Error Handler": 1, "Slack Command Handler": 1, "Daily Sales Report": 2}


def quickstart_block() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    after = readme[readme.index(MARKER) :]
    opened = after.index("```bash\n") + len("```bash\n")
    block = after[opened : after.index("\n```", opened)]
    return [line for line in block.splitlines() if line.strip() and not line.startswith("#")]


def console_link() -> str:
    readme = (ROOT / "README.md").read_text()
    after = readme[readme.index(MARKER) :]
    found = re.search(r"<(http://localhost:8080/ui[^>]*)>", after)
    assert found, "the quickstart names no console link"
    return found.group(1)


def script(lines: list[str], port: int) -> str:
    """The block as one bash script printing `### <line>` before each line's output."""
    steps = ["set -euo pipefail"]
    for line in lines:
        command = line.replace("localhost:8080", f"localhost:{port}")
        steps.append(f"echo; echo {shell_quote('### ' + line)}")
        runs = re.match(r'\.venv/bin/triggers executions "([^"]+)"', command)
        if runs:
            wanted = RUNS[runs.group(1)]
            command = (
                f"for _ in $(seq 240); do out=$({command.split('#')[0]}); "
                f'[ "$(grep -c " completed " <<<"$out")" -ge {wanted} ] && break; sleep 0.5; '
                'done; echo "$out"'
            )
        steps.append(command)
    return "\n".join(steps) + "\n"


def shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def outputs(printed: str) -> dict[str, str]:
    """Each line of the block and what it printed."""
    found: dict[str, str] = {}
    for chunk in printed.split("\n### ")[1:]:
        line, _, output = chunk.partition("\n")
        found[line] = output
    return found


def start_make_run(pipeline: Pipeline, port: int) -> subprocess.Popen[bytes]:
    env = {
        key: value
        for key, value in pipeline.env.items()
        if key not in ("SLACK_WEBHOOK_SECRET", "TRIGGERS_API_KEYS")
    }
    env["TRIGGERS_HTTP_PORT"] = str(port)
    log = open(pipeline.workdir / "run.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [str(ROOT / "deploy" / "run-local.sh")],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_for(pipeline: Pipeline, process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        log = (pipeline.workdir / "run.log").read_text(errors="replace")
        if process.poll() is not None:
            raise AssertionError(f"make run stopped:\n{log[-4000:]}")
        if "[worker]" in log and "Worker]: Ready" in log:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5):
                    return
            except OSError:
                pass
        time.sleep(0.5)
    raise AssertionError(f"make run not ready:\n{log[-4000:]}")


def test_the_readme_quickstart_fires_each_example_as_written(pipeline: Pipeline) -> None:
    port = free_port()
    process = start_make_run(pipeline, port)
    try:
        wait_for(pipeline, process, port)
        log = (pipeline.workdir / "run.log").read_text()
        assert "SLACK_WEBHOOK_SECRET=demo-slack-secret" in log

        lines = quickstart_block()
        path = pipeline.workdir / "quickstart.sh"
        path.write_text(script(lines, port))
        env = {k: v for k, v in pipeline.env.items() if k != "SLACK_WEBHOOK_SECRET"}
        ran = subprocess.run(
            ["bash", str(path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
        run_log = (pipeline.workdir / "run.log").read_text()
        assert ran.returncode == 0, f"{ran.stdout}\n{ran.stderr}\n{run_log[-3000:]}"
        printed = outputs(ran.stdout)

        def output_of(prefix: str) -> str:
            [found] = [out for line, out in printed.items() if line.startswith(prefix)]
            return found

        errors = output_of('.venv/bin/triggers executions "Error Handler"').splitlines()
        assert len(errors) == 1 and " completed " in errors[0], errors

        answer = output_of(".venv/bin/triggers sign")
        slack_id = re.search(r'"execution_id":"([0-9a-f-]+)"', answer)
        assert slack_id, answer
        slack = output_of('.venv/bin/triggers executions "Slack Command Handler"')
        assert f"completed  {slack_id.group(1)}" in slack

        started = re.search(r"execution_id=([0-9a-f-]+)", output_of(".venv/bin/triggers run"))
        over_rest = re.search(r'"execution_id":"([0-9a-f-]+)"', output_of("curl -s -X POST"))
        assert started and over_rest
        report = output_of('.venv/bin/triggers executions "Daily Sales Report"')
        assert f"completed  {started.group(1)}" in report
        assert f"completed  {over_rest.group(1)}" in report

        link = console_link().replace("localhost:8080", f"127.0.0.1:{port}")
        with urllib.request.urlopen(link, timeout=10) as page:
            assert page.status == 200
            assert page.url.endswith("/ui/login")
            assert "<h1>Sign in</h1>" in page.read().decode()
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(60)
    assert "run: stopped" in (pipeline.workdir / "run.log").read_text()
