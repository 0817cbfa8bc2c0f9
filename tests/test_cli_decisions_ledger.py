"""CLI: decisions list / backfill, care kill-switch, ledger emit / list; bad input changes nothing."""
import hashlib
import json

import pytest

from hoc_drivers import decisions as d
from hoc_drivers.db import init_database
from hoc_drivers.transaction_coordinator import TransactionCoordinator


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "cli.db"


def ok_json(result):
    assert result.exit_code == 0, result.output + result.stderr
    return json.loads(result.stdout)


def seed_decisions(path):
    db = init_database(str(path))
    coordinator = TransactionCoordinator(db)
    try:
        with coordinator.transaction() as tx:
            return [
                d.emit_routing_decision(tx, "acme", None, True, "agent-a", ["agent-a"],
                                        request_id="req-7"),
                d.emit_policy_precheck_decision(tx, "acme", "req-7", "strict", False, True, ["PII"]),
                d.emit_policy_decision(tx, "acme", "run-1", "pol-1", True, True, "error"),
                d.emit_policy_decision(tx, "other", "run-1", "pol-1", True, False),
            ]
    finally:
        db.close()


def test_care_kill_switch_on_off_status_persists_between_invocations(run_cli, db_path):
    assert run_cli(db_path, "init").exit_code == 0
    assert ok_json(run_cli(db_path, "care", "kill-switch", "status", "--json")) == {"active": False}
    assert ok_json(run_cli(db_path, "care", "kill-switch", "on", "--json")) == {"active": True}
    assert ok_json(run_cli(db_path, "care", "kill-switch", "status", "--json")) == {"active": True}
    result = run_cli(db_path, "care", "kill-switch", "status")
    assert result.exit_code == 0 and "True" in result.stdout
    assert ok_json(run_cli(db_path, "care", "kill-switch", "off", "--json")) == {"active": False}
    assert ok_json(run_cli(db_path, "care", "kill-switch", "status", "--json")) == {"active": False}


def test_decisions_list_is_a_tenant_filtered_list_of_to_dicts(run_cli, db_path):
    records = seed_decisions(db_path)
    listed = ok_json(run_cli(db_path, "decisions", "list", "--tenant", "acme", "--json"))
    assert listed == [r.to_dict() for r in reversed(records[:3])]  # newest first
    by_run = ok_json(run_cli(db_path, "decisions", "list", "--tenant", "acme", "--run", "run-1",
                             "--json"))
    assert [r["decision_id"] for r in by_run] == [records[2].decision_id]
    by_request = ok_json(run_cli(db_path, "decisions", "list", "--tenant", "acme", "--request",
                                 "req-7", "--type", "policy_pre_check", "--json"))
    assert [r["decision_outcome"] for r in by_request] == ["policy_blocked"]
    table = run_cli(db_path, "decisions", "list", "--tenant", "acme")
    assert table.exit_code == 0 and "DECISION_OUTCOME" in table.stdout and "policy_blocked" in table.stdout


def test_decisions_backfill_binds_pre_run_records_once(run_cli, db_path):
    seed_decisions(db_path)
    first = ok_json(run_cli(db_path, "decisions", "backfill", "req-7", "run-9", "--tenant", "acme",
                            "--json"))
    assert first == {"request_id": "req-7", "run_id": "run-9", "backfilled": 2}
    again = ok_json(run_cli(db_path, "decisions", "backfill", "req-7", "run-9", "--tenant", "acme",
                            "--json"))
    assert again["backfilled"] == 0
    bound = ok_json(run_cli(db_path, "decisions", "list", "--tenant", "acme", "--run", "run-9",
                            "--json"))
    assert [r["decision_type"] for r in bound] == ["policy_pre_check", "routing"]  # newest first


def test_ledger_emit_and_list(run_cli, db_path):
    args = ["ledger", "emit", "--artifact", "prediction_events", "--signal-type",
            "high_operator_access", "--detected-by", "ops"]
    assert run_cli(db_path, "init").exit_code == 0
    first = ok_json(run_cli(db_path, *args, "--evidence", '{"queries": 12}', "--confidence",
                            "0.8", "--json"))
    second = ok_json(run_cli(db_path, *args, "--evidence", '{"joins": 3}', "--json"))
    assert first["id"] == second["id"] and second["seen_count"] == 2
    assert second["evidence"] == {"queries": 12, "joins": 3} and second["confidence"] == 0.8
    ok_json(run_cli(db_path, *args, "--field", "score", "--json"))
    ok_json(run_cli(db_path, "ledger", "emit", "--artifact", "runs", "--signal-type",
                    "dominant_field", "--detected-by", "ci", "--json"))
    listed = ok_json(run_cli(db_path, "ledger", "list", "--json"))
    assert ("prediction_events", None, "high_operator_access", 2) in [
        (s["artifact"], s["field"], s["signal_type"], s["seen_count"]) for s in listed]
    assert listed[0]["artifact"] == "runs"  # the most recently seen first
    assert len(listed) == 3
    only = ok_json(run_cli(db_path, "ledger", "list", "--artifact", "runs", "--json"))
    assert [(s["artifact"], s["seen_count"]) for s in only] == [("runs", 1)]
    table = run_cli(db_path, "ledger", "list")
    assert table.exit_code == 0 and "SEEN_COUNT" in table.stdout


BAD_INPUT = [
    ("ledger", "emit", "--artifact", "a", "--signal-type", "s", "--detected-by", "d",
     "--confidence", "1.5"),
    ("ledger", "emit", "--artifact", "a", "--signal-type", "s", "--detected-by", "d",
     "--confidence", "high"),
    ("ledger", "emit", "--artifact", "a", "--signal-type", "s", "--detected-by", "d",
     "--evidence", "[1, 2]"),
    ("ledger", "emit", "--artifact", "a", "--signal-type", "s", "--detected-by", "d",
     "--evidence", "{not json"),
    ("ledger", "emit", "--artifact", "", "--signal-type", "s", "--detected-by", "d"),
    ("ledger", "emit", "--artifact", "a", "--signal-type", "s"),
    ("ledger", "list", "--status", "forgotten"),
    ("decisions", "list"),
    ("decisions", "list", "--tenant", "acme", "--type", "whim"),
    ("decisions", "list", "--tenant", " "),
    ("decisions", "backfill", "req-7", "--tenant", "acme"),
    ("decisions", "backfill", "req-7", "", "--tenant", "acme"),
    ("care", "kill-switch", "maybe"),
]


@pytest.mark.parametrize("args", BAD_INPUT, ids=[" ".join(a) for a in BAD_INPUT])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(run_cli, db_path, args):
    seed_decisions(db_path)
    before = hashlib.sha256(db_path.read_bytes()).hexdigest()
    result = run_cli(db_path, *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "Traceback" not in result.output
    assert hashlib.sha256(db_path.read_bytes()).hexdigest() == before


def test_bad_input_does_not_create_a_database(run_cli, db_path):
    result = run_cli(db_path, "ledger", "emit", "--artifact", "a", "--signal-type", "s",
                     "--detected-by", "d", "--confidence", "-1")
    assert result.exit_code == 2 and not db_path.exists()


@pytest.mark.parametrize("command", [("decisions", "list"), ("decisions", "backfill"),
                                     ("care", "kill-switch"), ("ledger", "emit"),
                                     ("ledger", "list")])
def test_every_command_has_help_with_an_example(run_cli, db_path, command):
    result = run_cli(db_path, *command, "--help")
    assert result.exit_code == 0 and "Example: hoc-drivers " + " ".join(command) in result.stdout
    assert "--json" in result.stdout
