"""CLI basics: init, run complete, bad input (one line, non-zero exit, nothing written)."""
import json

import pytest
from click.testing import CliRunner

import cli


def test_init_is_idempotent(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    assert run_cli(path, "init").exit_code == 0


def test_run_complete_failed_run(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    result = run_cli(path, "run", "complete", "run-42", "--tenant", "acme", "--status", "failed",
                     "--error-message", "AGENT_CRASH in step 3", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["phase"] == "EVENTS_PUBLISHED"
    assert data["incident"]["success"] and data["policy"]["success"]
    assert data["events_published"] == ["run.completed", "incident.created", "policy.evaluated"]


@pytest.mark.parametrize("args, message", [
    (["run", "complete", "r1", "--tenant", "t", "--status", "bogus"], "unknown status 'bogus'"),
    (["run", "complete", "r1", "--status", "failed"], "Missing option '--tenant'"),
    (["run", "complete", "r1", "--tenant", " ", "--status", "failed"], "must not be empty"),
    (["run", "complete", "--tenant", "t", "--status", "failed"], "Missing argument"),
    (["no-such-command"], "No such command"),
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(run_cli, tmp_path, args, message):
    path = tmp_path / "never.db"
    result = run_cli(path, *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.output + result.stderr
    assert not path.exists()


@pytest.mark.parametrize("args", [["--db", "", "init"], ["init", "--db", " "],
                                  ["incidents", "list", "--tenant", "acme", "--db", ""]])
def test_empty_db_path_is_bad_input_not_the_default_file(tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.cli, args)
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: Invalid value for '--db': must not be empty "
                                     "(leave --db out for ./hoc.db)")
    assert list(tmp_path.iterdir()) == []


def test_unreadable_database_path(run_cli, tmp_path):
    result = run_cli(tmp_path / "missing-dir" / "x.db", "init")
    assert result.exit_code == 1
    assert result.stderr.strip().startswith("error: cannot open database")
    assert len(result.stderr.strip().splitlines()) == 1


def test_database_in_read_only_place(run_cli, tmp_path):
    locked = tmp_path / "ro.db"
    locked.write_bytes(b"")
    locked.chmod(0o000)
    result = run_cli(locked, "init")
    locked.chmod(0o600)
    if result.exit_code == 0:  # running as root: permission bits do not stop us
        pytest.skip("root ignores file permissions")
    assert result.exit_code == 1 and "cannot open database" in result.stderr
