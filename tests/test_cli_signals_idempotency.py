"""CLI: `signals record|check|clear|list` and `idempotency check|claim` over real database files."""
import json
import sqlite3
from datetime import datetime, timedelta, timezone

import pytest
from freezegun import freeze_time
from conftest import dump

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "cli.db")


@pytest.fixture
def run(run_cli, db_path):
    """run(*args): invoke `hoc-drivers --db <db_path> args...` and return click's result."""
    return lambda *args: run_cli(db_path, *args)


def ok_json(result, exit_code=0):
    assert result.exit_code == exit_code, (result.output, result.stderr)
    return json.loads(result.stdout)


def assert_one_line_error(result, exit_code, fragment):
    assert result.exit_code == exit_code, (result.output, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert "Traceback" not in result.output and "Traceback" not in result.stderr


def test_record_check_clear_list_round_trip(run):
    assert run("init").exit_code == 0
    recorded = ok_json(run("signals", "record", "--scope", "PR-42", "--type", "CI_STATUS",
                           "--decision", "BLOCKED", "--by", "CI", "--reason", "tests red",
                           "--constraints", '{"blocked_files": ["a.py"]}', "--json"))
    assert (recorded["decision"], recorded["constraints"], recorded["reason"]) == (
        "BLOCKED", {"blocked_files": ["a.py"]}, "tests red")

    blocked = run("signals", "check", "--scope", "PR-42", "--json")
    data = ok_json(blocked, exit_code=3)
    assert data["is_blocked"] is True and data["blocking_signals"][0]["id"] == recorded["id"]
    assert run("signals", "check", "--scope", "PR-42").exit_code == 3
    assert run("signals", "check", "--scope", "PR-42", "--type", "SESSION_BLOCK").exit_code == 0
    assert run("signals", "check", "--scope", "PR-43").exit_code == 0

    listed = ok_json(run("signals", "list", "--scope", "PR-42", "--json"))
    assert [s["id"] for s in listed] == [recorded["id"]]

    cleared = ok_json(run("signals", "clear", "--scope", "PR-42", "--type", "CI_STATUS", "--by", "OPS", "--json"))
    assert (cleared["decision"], cleared["reason"]) == ("CLEAN", "Cleared by OPS")
    clear = ok_json(run("signals", "check", "--scope", "PR-42", "--json"))
    assert clear["is_blocked"] is False and clear["blocking_signals"] == []
    assert [s["decision"] for s in ok_json(run("signals", "list", "--scope", "PR-42", "--json"))] == ["CLEAN"]


def test_table_output_by_default(run):
    assert run("init").exit_code == 0
    result = run("signals", "record", "--scope", "S", "--type", "ci_status", "--decision", "warn", "--by", "CI")
    assert result.exit_code == 0 and "decision" in result.stdout and "WARN" in result.stdout
    check = run("signals", "check", "--scope", "S")
    assert check.exit_code == 0 and "is_blocked" in check.stdout and "CI_STATUS" in check.stdout
    listing = run("signals", "list", "--scope", "S")
    assert listing.stdout.splitlines()[0].split()[:3] == ["ID", "SIGNAL_TYPE", "DECISION"]


def test_expires_in_stops_blocking_at_the_expiry(run):
    assert run("init").exit_code == 0
    with freeze_time(T0):
        assert run("signals", "record", "--scope", "S", "--type", "SESSION_BLOCK", "--decision", "BLOCKED",
                   "--by", "OPS", "--expires-in", "60").exit_code == 0
    with freeze_time(T0 + timedelta(seconds=59)):
        assert run("signals", "check", "--scope", "S").exit_code == 3
    with freeze_time(T0 + timedelta(seconds=60)):
        assert run("signals", "check", "--scope", "S").exit_code == 0


RECORD = ["signals", "record", "--scope", "S", "--type", "CI_STATUS", "--by", "CI"]


@pytest.mark.parametrize("args, fragment", [
    ([*RECORD, "--decision", "DENIED"], "unknown decision 'DENIED'"),
    (["signals", "record", "--scope", "S", "--type", "LIFECYCLE", "--decision", "BLOCKED", "--by", "CI"],
     "unknown signal type 'LIFECYCLE'"),
    ([*RECORD, "--decision", "BLOCKED", "--expires-in", "-5"], "--expires-in must be a positive"),
    ([*RECORD, "--decision", "BLOCKED", "--expires-in", "0"], "--expires-in must be a positive"),
    ([*RECORD, "--decision", "BLOCKED", "--expires-in", "1e300"], "--expires-in is too large"),
    ([*RECORD, "--decision", "BLOCKED", "--constraints", "{oops"], "--constraints: malformed JSON"),
    ([*RECORD, "--decision", "BLOCKED", "--constraints", "[1]"], "constraints must be a JSON object"),
    (["signals", "record", "--scope", " ", "--type", "CI_STATUS", "--decision", "BLOCKED", "--by", "CI"],
     "scope is required"),
    (["signals", "record", "--scope", "S", "--type", "CI_STATUS", "--decision", "BLOCKED"], "--by"),
    (["signals", "check", "--scope", "S", "--type", "NOPE"], "unknown signal type 'NOPE'"),
    (["signals", "check"], "--scope"),
    (["signals", "clear", "--scope", "S", "--type", "CI_STATUS", "--by", ""], "recorded_by is required"),
    (["signals", "list", "--scope", ""], "scope is required"),
    (["idempotency", "check", "order-7"], "--tenant"),
    (["idempotency", "check", "order-7", "--tenant", ""], "'--tenant': must not be empty"),
    (["idempotency", "check", "", "--tenant", "acme"], "idempotency key is required"),
    (["idempotency", "claim", "order-7", "--tenant", "acme", "--fingerprint", " "], "--fingerprint"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run, db_path, args, fragment):
    result = run(*args)
    assert_one_line_error(result, 2, fragment)
    with pytest.raises(sqlite3.OperationalError):  # not even an empty database file was created
        sqlite3.connect(f"file:{db_path}?mode=ro", uri=True).execute("select 1")

    assert run("init").exit_code == 0
    assert run(*RECORD, "--decision", "BLOCKED").exit_code == 0
    before = dump(db_path)
    assert_one_line_error(run(*args), 2, fragment)
    assert dump(db_path) == before


def test_idempotency_check_and_claim(run, db_path):
    assert run("init").exit_code == 0
    missing = ok_json(run("idempotency", "check", "order-7", "--tenant", "acme", "--json"))
    assert missing == {"exists": False, "run_id": None, "status": None, "is_expired": False,
                       "should_return_cached": False}
    claimed = ok_json(run("idempotency", "claim", "order-7", "--tenant", "acme", "--agent", "billing",
                          "--fingerprint", "fp-1", "--json"))
    assert claimed["created"] is True and claimed["status"] == "queued"
    again = ok_json(run("idempotency", "claim", "order-7", "--tenant", "acme", "--fingerprint", "fp-1", "--json"))
    assert (again["run_id"], again["created"]) == (claimed["run_id"], False)

    found = ok_json(run("idempotency", "check", "order-7", "--tenant", "acme", "--json"))
    assert {k: found[k] for k in ("exists", "run_id", "status", "is_expired")} == {
        "exists": True, "run_id": claimed["run_id"], "status": "queued", "is_expired": False}
    assert found["should_return_cached"] is True
    other_tenant = ok_json(run("idempotency", "check", "order-7", "--tenant", "globex", "--json"))
    assert other_tenant["exists"] is False
    table = run("idempotency", "check", "order-7", "--tenant", "acme")
    assert table.exit_code == 0 and claimed["run_id"] in table.stdout

    before = dump(db_path)
    conflict = run("idempotency", "claim", "order-7", "--tenant", "acme", "--fingerprint", "fp-2")
    assert_one_line_error(conflict, 1, "already used for a different request")
    assert dump(db_path) == before


def test_idempotency_check_reports_expiry(run):
    assert run("init").exit_code == 0
    with freeze_time(T0):
        assert run("idempotency", "claim", "order-7", "--tenant", "acme").exit_code == 0
    with freeze_time(T0 + timedelta(days=1)):
        expired = ok_json(run("idempotency", "check", "order-7", "--tenant", "acme", "--json"))
    assert expired["exists"] and expired["is_expired"] and not expired["should_return_cached"]


@pytest.mark.parametrize("command", [["signals", "record"], ["signals", "check"], ["signals", "clear"],
                                     ["signals", "list"], ["idempotency", "check"],
                                     ["idempotency", "claim"]])
def test_every_command_has_help_with_an_example_and_json(run, command):
    result = run(*command, "--help")
    assert result.exit_code == 0 and "Example: hoc-drivers" in result.stdout and "--json" in result.stdout
