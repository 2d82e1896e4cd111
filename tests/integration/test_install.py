"""The install users get: the wheel, with its runtime dependencies only, in a fresh venv.

The development venv has the dev tools too, so a module the product imports but does
not declare would work there and fail for users. This builds the wheel, installs it
into an empty virtual environment with the locked runtime set (what the Docker image
installs: `uv sync --no-dev`), and runs the components from there, outside the source
tree.
"""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import orjson

from processor import topics
from tests.integration.kafka import ROOT, Pipeline, reading
from tests.integration.test_cli_and_serve import free_port

UV = str(ROOT / ".tools" / "uv" / "bin" / "uv")


def installed(workdir: Path) -> Path:
    """A fresh venv holding the built wheel and its runtime dependencies; its bin/."""
    dist = workdir / "dist"
    subprocess.run(
        [UV, "build", "--wheel", "--out-dir", str(dist), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = dist.glob("*.whl")
    runtime = workdir / "runtime.txt"
    subprocess.run(
        [UV, "export", "--frozen", "--no-dev", "--no-hashes", "--no-emit-project", "-o", runtime],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=120,
    )
    venv = workdir / "venv"
    subprocess.run(
        [UV, "venv", "--quiet", "--python", "python3.11", str(venv)], check=True, timeout=120
    )
    subprocess.run(
        [UV, "pip", "install", "-q", "--python", venv / "bin" / "python", "-c", runtime, wheel],
        check=True,
        capture_output=True,
        timeout=600,
    )
    return venv / "bin"


def status_of(
    url: str, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, str, str]:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.url, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, url, exc.read().decode()


def test_the_installed_wheel_runs_every_component(pipeline: Pipeline) -> None:
    bin_ = installed(pipeline.workdir)
    triggers = str(bin_ / "triggers")
    outside = pipeline.workdir / "elsewhere"
    outside.mkdir()
    env = {
        **pipeline.env,
        "SLACK_WEBHOOK_SECRET": "s3cret",
        "TRIGGERS_API_KEYS": '{"k": "default"}',
    }

    def cli(*args: str) -> str:
        done = subprocess.run(
            [triggers, *args], cwd=outside, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    version = cli("--version")
    assert version.strip().startswith("triggers ")
    cli("apply", "-f", str(ROOT / "examples" / "slack-command-handler.yaml"))

    port = free_port()

    def start(name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(pipeline.workdir / f"installed-{name}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            [triggers, *args], cwd=outside, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        pipeline.processes.append(process)
        return process

    serve = start("serve", "serve", "--port", str(port))
    worker = start("worker", "worker")
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        assert serve.poll() is None, (pipeline.workdir / "installed-serve.log").read_text()
        try:
            if status_of(f"{base}/readyz")[0] == 200:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, (pipeline.workdir / "installed-serve.log").read_text()
        time.sleep(0.3)

    assert status_of(f"{base}/healthz")[0] == 200
    code, url, page = status_of(f"{base}/ui")
    assert (code, url.endswith("/ui/login")) == (200, True) and "Sign in" in page

    body = "text=hello&user_id=U1&channel_id=C1"
    signed = cli("sign", "Slack Command Handler", body)
    headers = dict(line.split(": ", 1) for line in signed.splitlines())
    code, _, answer = status_of(f"{base}/webhooks/slack/commands", body.encode(), headers)
    assert code == 202, answer
    execution_id = orjson.loads(answer)["execution_id"]
    with reading(pipeline.bootstrap, pipeline.topic(topics.WEBHOOKS)) as collect:
        [delivery] = collect(lambda seen: len(seen) >= 1)
    assert delivery["body"] == {"text": "hello", "user_id": "U1", "channel_id": "C1"}

    deadline = time.monotonic() + 120
    while "Worker]: Ready" not in (pipeline.workdir / "installed-worker.log").read_text(
        errors="replace"
    ):
        assert worker.poll() is None, (pipeline.workdir / "installed-worker.log").read_text()
        assert time.monotonic() < deadline, (pipeline.workdir / "installed-worker.log").read_text()
        time.sleep(0.5)
    with reading(pipeline.bootstrap, pipeline.topic(topics.AGENT_RUNS)) as collect:
        [command] = collect(lambda seen: len(seen) >= 1)
    assert command["execution_id"] == execution_id
    assert command["input"]["text"] == "hello"
