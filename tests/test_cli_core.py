"""CLI basics: init, run complete, bad input (one line, non-zero exit, nothing written)."""
import json

import pytest
from click.testing import CliRunner

import cli
from conftest import alter, dump


def test_init_is_idempotent(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    assert run_cli(path, "init").exit_code == 0


def test_run_complete_failed_run(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
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


@pytest.mark.sqlite_only
def test_database_in_read_only_place(run_cli, tmp_path):
    locked = tmp_path / "ro.db"
    locked.write_bytes(b"")
    locked.chmod(0o000)
    result = run_cli(locked, "init")
    locked.chmod(0o600)
    if result.exit_code == 0:  # running as root: permission bits do not stop us
        pytest.skip("root ignores file permissions")
    assert result.exit_code == 1 and "cannot open database" in result.stderr


def test_db_flag_wins_over_the_environment_wherever_it_is_written(run_cli, tmp_path):
    blocked, clear = tmp_path / "blocked.db", tmp_path / "clear.db"
    for path in (blocked, clear):
        assert run_cli(path, "init").exit_code == 0
    assert run_cli(blocked, "signals", "record", "--scope", "S", "--type", "CI_STATUS", "--decision",
                   "BLOCKED", "--by", "CI").exit_code == 0
    runner = CliRunner(env={"HOC_DRIVERS_DB": str(clear)})
    check = ["signals", "check", "--scope", "S"]
    assert runner.invoke(cli.cli, check).exit_code == 0  # the environment, when no flag is given
    assert runner.invoke(cli.cli, ["--db", str(blocked), *check]).exit_code == 3
    assert runner.invoke(cli.cli, [*check, "--db", str(blocked)]).exit_code == 3


@pytest.mark.parametrize("args", [
    ["signals", "check", "--scope", "PR-42"],
    ["guard", "status", "--tenant", "acme"],
    ["killswitch", "status", "--tenant", "acme", "--entity-type", "tenant", "--entity-id", "acme"],
    ["schema", "check"],
    ["ledger", "list"],
    ["run", "complete", "r1", "--tenant", "acme", "--status", "failed"],
])
def test_a_missing_database_is_bad_input_and_is_never_created(run_cli, tmp_path, args):
    typo = tmp_path / "hoc.bd"
    result = run_cli(typo, *args)
    assert result.exit_code == 2, (result.output, result.stderr)
    assert result.stderr == (f"error: database {typo} does not exist "
                             f"(create it with `hoc-drivers --db {typo} init`)\n")
    assert list(tmp_path.iterdir()) == []


def test_the_default_and_the_environment_path_are_not_created_either(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.cli, ["guard", "status", "--tenant", "acme"])
    assert result.exit_code == 2 and "database hoc.db does not exist" in result.stderr
    result = CliRunner(env={"HOC_DRIVERS_DB": "other.db"}).invoke(cli.cli, ["signals", "list", "--scope", "S"])
    assert result.exit_code == 2 and "database other.db does not exist" in result.stderr
    assert list(tmp_path.iterdir()) == []
    assert CliRunner().invoke(cli.cli, ["init"]).exit_code == 0 and (tmp_path / "hoc.db").exists()


@pytest.mark.parametrize("statement, difference, init_repairs", [
    ("ALTER TABLE incidents DROP COLUMN description",
     "COLUMN_MISSING incidents: column description is missing", False),
    ("DROP INDEX governance_signals_active",
     "INDEX governance_signals: unique index governance_signals_active on (scope, signal_type) "
     "where superseded_at is null is missing", True),
    ("ALTER TABLE cost_records ADD COLUMN legacy TEXT",  # the cost tables must match exactly
     "COLUMN_EXTRA cost_records: column legacy is not in the model", False),
])
def test_a_drifted_database_is_refused_in_one_line(run_cli, tmp_path, statement, difference, init_repairs):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    alter(path, statement)
    refusal = (f"error: database {path} does not match the models: {difference}; "
               f"`hoc-drivers schema check` lists the differences\n")
    for args in (["signals", "check", "--scope", "PR-42"], ["guard", "status", "--tenant", "acme"]):
        result = run_cli(path, *args)
        assert (result.exit_code, result.stdout, result.stderr) == (1, "", refusal), args
    assert difference in run_cli(path, "schema", "check").output
    result = run_cli(path, "init")  # creates what is missing, cannot change what is there
    assert result.exit_code == (0 if init_repairs else 1), (result.output, result.stderr)
    assert run_cli(path, "signals", "check", "--scope", "PR-42").exit_code == (0 if init_repairs else 1)


def test_a_warning_does_not_stop_the_guard(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    alter(path, "ALTER TABLE incidents ADD COLUMN legacy TEXT", "CREATE TABLE app_notes (note TEXT)")
    assert run_cli(path, "incidents", "list", "--tenant", "acme").exit_code == 0


SWITCH = ["--tenant", "acme", "--entity-type", "tenant", "--entity-id", "acme"]
WRITERS = {
    "signals record": ["--scope", "S", "--type", "CI_STATUS", "--decision", "BLOCKED", "--by", "CI",
                       "--constraints", '{"files": ["a.py"]}'],
    "signals clear": ["--scope", "S", "--type", "CI_STATUS", "--by", "OPS"],
    "ledger emit": ["--artifact", "a", "--signal-type", "s", "--detected-by", "d", "--evidence", '{"n": 1}'],
    "anomaly record": ["--tenant", "acme", "--anomaly-id", "an-2", "--type", "DRIFT", "--severity", "low",
                       "--current-cents", "200", "--expected-cents", "100"],
    "breach record": ["--tenant", "acme", "--limit-id", "l", "--type", "BREACHED", "--value", "2",
                      "--limit", "1", "--details", '{"window": "day"}'],
    "killswitch freeze": ["--tenant", "acme", "--entity-type", "key", "--entity-id", "k1", "--by", "ops"],
    "killswitch unfreeze": [*SWITCH, "--by", "ops"],
    "incidents ack": ["INCIDENT", "--tenant", "acme"],
    "incidents resolve": ["INCIDENT", "--tenant", "acme"],
    "idempotency claim": ["order-7", "--tenant", "acme"],
    "decisions backfill": ["req-7", "run-9", "--tenant", "acme"],
    "care kill-switch": ["on"],
}


@pytest.mark.parametrize("command", sorted(WRITERS))
def test_a_command_failing_before_its_output_is_printed_commits_nothing(run_cli, tmp_path, monkeypatch,
                                                                        command):
    from hoc_drivers import decisions
    from hoc_drivers.commands import common
    from hoc_drivers.db import connect_database
    from hoc_drivers.transaction_coordinator import TransactionCoordinator

    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    incident = json.loads(run_cli(path, "anomaly", "record", "--tenant", "acme", "--anomaly-id", "an-1",
                                  "--type", "DRIFT", "--severity", "high", "--current-cents", "200",
                                  "--expected-cents", "100", "--json").stdout)["incident_id"]
    assert run_cli(path, "killswitch", "freeze", *SWITCH, "--by", "ops").exit_code == 0
    db = connect_database(str(path))
    with TransactionCoordinator(db).transaction() as tx:
        decisions.emit_routing_decision(tx, "acme", None, True, "agent-a", ["agent-a"], request_id="req-7")
    db.close()
    before = dump(path)

    def fail(value):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(common, "to_jsonable", fail)  # what printing deep JSON used to hit
    args = [incident if a == "INCIDENT" else a for a in WRITERS[command]]
    result = run_cli(path, *command.split(), *args, "--json")
    assert result.exit_code == 1, (result.output, result.stderr)
    assert result.stderr == "error: RecursionError: maximum recursion depth exceeded\n"
    assert dump(path) == before


def test_schema_check_counts_every_finding_it_lists(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    alter(path, "ALTER TABLE incidents DROP COLUMN description", "DROP INDEX governance_signals_active",
          "ALTER TABLE incidents ADD COLUMN legacy TEXT")
    result = run_cli(path, "schema", "check")
    lines = result.output.splitlines()
    assert sorted(line.split()[0] for line in lines[:-1]) == ["error", "error", "warning"]
    assert lines[-1] == "2 schema difference(s), 0 integrity problem(s), 1 warning(s)"


def test_debug_after_the_subcommand_shows_the_traceback(tmp_path):
    missing = str(tmp_path / "missing.db")
    for args in (["--debug", "schema", "check", "--db", missing], ["schema", "check", "--db", missing, "--debug"]):
        result = CliRunner().invoke(cli.cli, args)
        assert result.exit_code == 2 and "Traceback" in result.stderr, args
        assert result.stderr.endswith(f"error: database {missing} does not exist "
                                      f"(create it with `hoc-drivers --db {missing} init`)\n")


@pytest.mark.parametrize("args", [[], ["killswitch"], ["dag"]])
def test_a_bare_command_prints_its_help_as_written(args):
    result = CliRunner().invoke(cli.cli, args)
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("Usage: ") and "Commands:" in lines and len(lines) > 8


@pytest.mark.parametrize("args, message", [
    (["killswitch", "status", "--tenant", "a", "--entity-id", "x"],
     "error: Missing option '--entity-type'. Choose from: tenant, key"),
    (["demi"], "error: No such command 'demi'. Did you mean 'demo'? (`hoc-drivers --help` lists them)"),
    (["sinals", "list"], "error: No such command 'sinals'. Did you mean 'signals'?"),
    (["alerts", "enqueue", "--tenant", "a", "--policy", "p", "--run", "r", "--metric", "m", "--current", "1",
      "--threshold", "2", "--channel", "webhook"], "error: --webhook-url must be an http(s) URL"),
    (["alerts", "enqueue", "--tenant", "a", "--policy", "p", "--run", "r", "--metric", "m", "--current", "1",
      "--threshold", "2", "--channel", "email"], "error: the email channel is enabled but --email is empty"),
    (["care", "kill-switch", "maybe"],
     "error: Invalid value for 'ACTION': 'maybe' is not one of 'on', 'off', 'status'."),
])
def test_errors_name_options_plainly(run_cli, tmp_path, args, message):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    result = run_cli(path, *args)
    assert result.exit_code == 2 and result.stderr.startswith(message), result.stderr
    assert len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize("args", [["audit"], ["bench", "--quick"], ["dag", "check", "x.plang"],
                                  ["dag", "plan", "x.plang"]])
def test_commands_without_a_database_take_no_db(args, tmp_path):
    result = CliRunner().invoke(cli.cli, [*args, "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 2 and "No such option '--db'" in result.stderr
    command = [word for word in args if word.isalpha()]
    assert "--db" not in CliRunner().invoke(cli.cli, [*command, "--help"]).stdout
