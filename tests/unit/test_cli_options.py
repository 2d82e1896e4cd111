"""Options the CLI checks itself, before it reads or writes anything."""

from __future__ import annotations

from typer.testing import CliRunner

from processor.cli.main import app


def test_executions_refuses_a_status_that_does_not_exist_and_names_those_that_do() -> None:
    result = CliRunner().invoke(app, ["executions", "--status", "faild"])
    assert result.exit_code == 2
    assert "'faild' is not one of" in result.output and "'failed'" in result.output
