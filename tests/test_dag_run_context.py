"""`dag run --context -`: the context read from standard input, for a pipeline step."""
import json
import pathlib

import pytest
from click.testing import CliRunner

import cli

MAIN = str(pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "policies" / "main.plang")


def run_with_stdin(tmp_path, text, *options):
    return CliRunner().invoke(cli.cli, ["--db", str(tmp_path / "hoc.db"), "dag", "run", MAIN,
                                        "--context", "-", *options], input=text)


def test_context_from_stdin_decides_and_fails_the_pipeline(tmp_path):
    context = {"user": {"id": "u1", "status": "suspended"}}
    result = run_with_stdin(tmp_path, json.dumps(context), "--fail-on", "deny", "--json")
    assert result.exit_code == 3, result.output
    trace = json.loads(result.stdout)
    assert trace["final_action"] == "deny" and trace["decided_by"] == "kill_switch"
    allowed = run_with_stdin(tmp_path, '{"user": {"role": "analyst"}}', "--fail-on", "deny")
    assert allowed.exit_code == 0 and "final action: allow" in allowed.stdout


@pytest.mark.parametrize("text, message", [
    ("", "--context: malformed JSON"),
    ("[1]", "--context: must be a JSON object"),
    ("@/etc/hostname", "--context: malformed JSON on standard input"),
])
def test_bad_stdin_is_bad_input(tmp_path, text, message):
    result = run_with_stdin(tmp_path, text)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "hoc.db").exists()
