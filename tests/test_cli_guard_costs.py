"""CLI: killswitch, incidents, anomaly and breach commands; bad input is one line and writes nothing."""
import json
import sqlite3

import pytest
from conftest import as_json, dump, ok, one_line_error


SWITCH = ["--tenant", "acme", "--entity-type", "tenant", "--entity-id", "acme"]
ANOMALY = ["anomaly", "record", "--tenant", "acme", "--anomaly-id", "an-1", "--type",
           "BUDGET_EXCEEDED", "--severity", "HIGH", "--current-cents", "15000",
           "--expected-cents", "10000"]


def test_killswitch_freeze_status_unfreeze(run_cli, db):
    status = as_json(run_cli(db, "killswitch", "status", *SWITCH, "--json"))
    assert status["is_frozen"] is False and status["frozen_by"] is None
    frozen = as_json(run_cli(db, "killswitch", "freeze", *SWITCH, "--by", "ops", "--reason",
                             "cost spike", "--json"))
    assert (frozen["is_frozen"], frozen["frozen_by"], frozen["freeze_reason"]) == (True, "ops", "cost spike")
    status = as_json(run_cli(db, "killswitch", "status", *SWITCH, "--json"))
    assert (status["is_frozen"], status["frozen_by"], status["trigger_type"]) == (True, "ops", "manual")
    table = ok(run_cli(db, "killswitch", "status", *SWITCH)).stdout
    assert "is_frozen" in table and "True" in table
    unfrozen = as_json(run_cli(db, "killswitch", "unfreeze", *SWITCH, "--by", "ops2", "--json"))
    assert (unfrozen["is_frozen"], unfrozen["unfrozen_by"], unfrozen["frozen_by"]) == (False, "ops2", "ops")


def test_killswitch_default_reason_and_key_switch(run_cli, db):
    key = ["--tenant", "acme", "--entity-type", "key", "--entity-id", "key-1"]
    frozen = as_json(run_cli(db, "killswitch", "freeze", *key, "--by", "ops", "--json"))
    assert frozen["freeze_reason"] == "Manual freeze" and frozen["entity_type"] == "key"
    tenant_switch = as_json(run_cli(db, "killswitch", "status", *SWITCH, "--json"))
    assert tenant_switch["is_frozen"] is False


def test_killswitch_transitions_are_refused_without_writing(run_cli, db):
    ok(run_cli(db, "killswitch", "freeze", *SWITCH, "--by", "alice", "--reason", "first"))
    before = dump(db)
    result = run_cli(db, "killswitch", "freeze", *SWITCH, "--by", "mallory")
    one_line_error(result, 1, "Tenant 'acme' is already frozen (by alice")
    assert dump(db) == before
    ok(run_cli(db, "killswitch", "unfreeze", *SWITCH, "--by", "alice"))
    before = dump(db)
    one_line_error(run_cli(db, "killswitch", "unfreeze", *SWITCH, "--by", "alice"), 1,
                   "Tenant 'acme' is not frozen")
    one_line_error(run_cli(db, "killswitch", "unfreeze", "--tenant", "other", "--entity-type",
                           "key", "--entity-id", "k", "--by", "x"), 1, "Key 'k' is not frozen")
    assert dump(db) == before


def test_killswitch_is_tenant_scoped(run_cli, db):
    ok(run_cli(db, "killswitch", "freeze", *SWITCH, "--by", "ops"))
    other = as_json(run_cli(db, "killswitch", "status", "--tenant", "beta", "--entity-type",
                            "tenant", "--entity-id", "acme", "--json"))
    assert other["is_frozen"] is False


def test_anomaly_record_then_list_ack_resolve(run_cli, db):
    recorded = as_json(run_cli(db, *ANOMALY, "--json"))
    again = as_json(run_cli(db, *ANOMALY, "--json"))
    assert recorded["incident_id"] == again["incident_id"]
    listed = as_json(run_cli(db, "incidents", "list", "--tenant", "acme", "--json"))
    assert [(i["id"], i["tenant_id"], i["status"], i["severity"]) for i in listed] == [
        (recorded["incident_id"], "acme", "open", "high")]
    assert listed[0]["title"] == "Cost anomaly: BUDGET_EXCEEDED (+$50.00)"
    assert as_json(run_cli(db, "incidents", "list", "--tenant", "beta", "--json")) == []
    incident_id = recorded["incident_id"]
    acked = as_json(run_cli(db, "incidents", "ack", incident_id, "--tenant", "acme", "--json"))
    assert acked["status"] == "acknowledged" and acked["acknowledged_at"]
    assert as_json(run_cli(db, "incidents", "list", "--tenant", "acme", "--status", "open",
                           "--json")) == []
    resolved = as_json(run_cli(db, "incidents", "resolve", incident_id, "--tenant", "acme",
                               "--by", "oncall", "--json"))
    assert (resolved["status"], resolved["resolved_by"]) == ("resolved", "oncall")
    table = ok(run_cli(db, "incidents", "list", "--tenant", "acme")).stdout
    assert table.splitlines()[0].split()[:3] == ["ID", "STATUS", "SEVERITY"]
    assert incident_id in table and "resolved" in table


def test_incident_commands_refuse_other_tenants_and_bad_transitions(run_cli, db):
    incident_id = as_json(run_cli(db, *ANOMALY, "--json"))["incident_id"]
    before = dump(db)
    one_line_error(run_cli(db, "incidents", "ack", incident_id, "--tenant", "beta"), 1,
                   f"incident '{incident_id}' not found for tenant 'beta'")
    one_line_error(run_cli(db, "incidents", "resolve", "nope", "--tenant", "acme"), 1,
                   "incident 'nope' not found")
    assert dump(db) == before
    ok(run_cli(db, "incidents", "resolve", incident_id, "--tenant", "acme"))
    before = dump(db)
    one_line_error(run_cli(db, "incidents", "resolve", incident_id, "--tenant", "acme"), 1,
                   "it is resolved")
    one_line_error(run_cli(db, "incidents", "ack", incident_id, "--tenant", "acme"), 1,
                   "cannot acknowledge")
    assert dump(db) == before


def test_anomaly_record_table_output_and_entity(run_cli, db):
    out = ok(run_cli(db, "anomaly", "record", "--tenant", "acme", "--anomaly-id", "an-2", "--type",
                     "USER_SPIKE", "--severity", "critical", "--current-cents", "450",
                     "--expected-cents", "100", "--entity-type", "agent", "--entity-id", "bot-1")).stdout
    assert "incident_id" in out
    listed = as_json(run_cli(db, "incidents", "list", "--tenant", "acme", "--json"))
    assert (listed[0]["severity"], listed[0]["trigger_type"], listed[0]["affected_agent_id"]) == (
        "critical", "cost_spike", "bot-1")


def test_breach_record(run_cli, tmp_path):
    db = tmp_path / "hoc.db"
    ok(run_cli(db, "init"))
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("INSERT INTO runs (id, tenant_id, status, incident_count, created_at, updated_at)"
                     " VALUES ('run-1', 'acme', 'running', 0, '2026-01-01', '2026-01-01')")
    conn.close()
    data = as_json(run_cli(db, "breach", "record", "--tenant", "acme", "--limit-id", "daily",
                           "--type", "EXHAUSTED", "--value", "150.0000", "--limit", "100.00",
                           "--run", "run-1", "--details", '{"window": "day"}', "--json"))
    assert (data["value_at_breach"], data["limit_value"], data["breach_type"]) == (
        150, 100, "EXHAUSTED")  # Decimals are JSON numbers
    conn = sqlite3.connect(db)
    row = conn.execute("SELECT tenant_id, limit_id, run_id, value_at_breach, limit_value, details "
                       "FROM limit_breaches WHERE id = ?", (data["breach_id"],)).fetchone()
    conn.close()
    assert row[:5] == ("acme", "daily", "run-1", "150.0000", "100.00")
    assert json.loads(row[5]) == {"window": "day"}


@pytest.mark.parametrize("args, message", [
    (["killswitch", "freeze", "--entity-type", "tenant", "--entity-id", "a", "--by", "x"],
     "Missing option '--tenant'"),
    (["killswitch", "freeze", "--tenant", " ", "--entity-type", "tenant", "--entity-id", "a",
      "--by", "x"], "must not be empty"),
    (["killswitch", "freeze", *SWITCH[:2], "--entity-type", "user", "--entity-id", "a", "--by", "x"],
     "Invalid value for '--entity-type'"),
    (["killswitch", "freeze", *SWITCH], "Missing option '--by'"),
    (["killswitch", "freeze", "--tenant", "acme", "--entity-type", "tenant", "--entity-id", "other",
      "--by", "ops"], "--entity-id 'other' is not --tenant 'acme'"),
    (["killswitch", "unfreeze", *SWITCH, "--by", ""], "must not be empty"),
    (["killswitch", "status", "--tenant", "acme", "--entity-type", "org", "--entity-id", "a"],
     "Invalid value for '--entity-type'"),
    (["incidents", "list"], "Missing option '--tenant'"),
    (["incidents", "list", "--tenant", "acme", "--status", "closed"], "Invalid value for '--status'"),
    (["incidents", "ack", "inc-1"], "Missing option '--tenant'"),
    (["incidents", "resolve", "--tenant", "acme"], "Missing argument"),
    ([*ANOMALY[:-4], "--current-cents", "-5", "--expected-cents", "100"], "-5 is not in the range"),
    ([*ANOMALY[:-2], "--expected-cents", "ten"], "'ten' is not a valid integer"),
    ([*ANOMALY[:2], *ANOMALY[4:]], "Missing option '--tenant'"),
    ([*ANOMALY[:8], "--severity", "SEVERE", *ANOMALY[10:]], "Invalid value for '--severity'"),
    ([*ANOMALY[:4], "--anomaly-id", "", *ANOMALY[6:]], "must not be empty"),
    (["breach", "record", "--tenant", "acme", "--limit-id", "L", "--type", "EXCEEDED", "--value",
      "1", "--limit", "2"], "Invalid value for '--type'"),
    (["breach", "record", "--tenant", "acme", "--limit-id", "L", "--type", "BREACHED", "--value",
      "abc", "--limit", "2"], "'abc' is not a decimal number"),
    (["breach", "record", "--tenant", "acme", "--limit-id", "L", "--type", "BREACHED", "--value",
      "1", "--limit", "-2"], "must be a finite number >= 0"),
    (["breach", "record", "--tenant", "acme", "--limit-id", "L", "--type", "BREACHED", "--value",
      "NaN", "--limit", "2"], "must be a finite number >= 0"),
    (["breach", "record", "--tenant", "acme", "--limit-id", "L", "--type", "BREACHED", "--value",
      "1", "--limit", "2", "--details", "{oops"], "--details: malformed JSON"),
    (["breach", "record", "--tenant", "acme", "--limit-id", "L", "--type", "BREACHED", "--value",
      "1", "--limit", "2", "--details", "[1, 2]"], "--details: must be a JSON object"),
    (["breach", "record", "--limit-id", "L", "--type", "BREACHED", "--value", "1", "--limit", "2"],
     "Missing option '--tenant'"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run_cli, tmp_path, args, message):
    fresh = tmp_path / "never.db"
    one_line_error(run_cli(fresh, *args), 2, message)
    assert not fresh.exists()

    existing = tmp_path / "hoc.db"
    ok(run_cli(existing, "init"))
    ok(run_cli(existing, "killswitch", "freeze", *SWITCH, "--by", "ops"))
    ok(run_cli(existing, *ANOMALY))
    before = dump(existing)
    one_line_error(run_cli(existing, *args), 2, message)
    assert dump(existing) == before


def test_governance_failure_is_one_line_exit_1_and_writes_nothing(run_cli, db):
    ok(run_cli(db, *ANOMALY))
    before = dump(db)
    result = run_cli(db, "breach", "record", "--tenant", "acme", "--limit-id", "L", "--type",
                     "BREACHED", "--value", "1", "--limit", "2", "--run", "run-of-nobody")
    one_line_error(result, 1, "[Policies] record_limit_breach: run 'run-of-nobody' not found")
    assert dump(db) == before


@pytest.mark.parametrize("command", [
    ["killswitch", "freeze"], ["killswitch", "unfreeze"], ["killswitch", "status"],
    ["incidents", "list"], ["incidents", "ack"], ["incidents", "resolve"],
    ["anomaly", "record"], ["breach", "record"],
])
def test_every_command_has_help_with_an_example_and_json(run_cli, tmp_path, command):
    result = ok(run_cli(tmp_path / "hoc.db", *command, "--help"))
    assert "Example: hoc-drivers " + " ".join(command) in result.stdout
    assert "--json" in result.stdout
    assert not (tmp_path / "hoc.db").exists()
