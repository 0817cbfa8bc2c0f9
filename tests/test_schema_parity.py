"""Schema parity: a fresh database matches; drift is named, difference by difference."""
import json
import sqlite3

import pytest

from hoc_drivers.db import init_database
from hoc_drivers.schema_parity import (
    SchemaParityError, check_m26_cost_tables, check_schema_parity, compare_schema,
    run_startup_parity_check)


@pytest.fixture
def fresh(tmp_path, run_cli):
    path = tmp_path / "parity.db"
    assert run_cli(path, "init").exit_code == 0
    return path


def alter(path, *statements):
    conn = sqlite3.connect(path)
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()


def test_fresh_database_matches(fresh, run_cli):
    result = run_cli(fresh, "schema", "check")
    assert result.exit_code == 0, result.output
    assert "schema OK" in result.output
    db = init_database(str(fresh))
    assert check_schema_parity(db) == (True, [])
    assert run_startup_parity_check(db)["ok"]


def test_dropped_column_is_named(fresh, run_cli):
    alter(fresh, "ALTER TABLE incidents DROP COLUMN description")
    result = run_cli(fresh, "schema", "check")
    assert result.exit_code == 1
    assert "COLUMN_MISSING incidents: column description is missing" in result.output


def test_changed_type_and_nullability_are_named(fresh, run_cli):
    alter(fresh, "DROP TABLE aos_traces",
          "CREATE TABLE aos_traces (trace_id VARCHAR(255) NOT NULL PRIMARY KEY, tenant_id INTEGER "
          "NOT NULL, run_id VARCHAR(255) NOT NULL, status VARCHAR(255) NOT NULL, created_at "
          "DATETIME NOT NULL, completed_at DATETIME NOT NULL, incident_id VARCHAR(255))",
          "CREATE INDEX aos_traces_tenant_id ON aos_traces (tenant_id)",
          "CREATE INDEX aos_traces_run_id ON aos_traces (run_id)")
    result = run_cli(fresh, "schema", "check", "--json")
    assert result.exit_code == 1
    details = {(i["kind"], i["detail"]) for i in json.loads(result.output)["issues"]}
    assert ("COLUMN_TYPE", "column tenant_id is INTEGER, expected VARCHAR(255)") in details
    assert ("COLUMN_NULL", "column completed_at should be NULL") in details


def test_removed_index_and_extra_column(fresh, run_cli):
    alter(fresh, "DROP INDEX incidents_tenant_id_status",
          "ALTER TABLE incidents ADD COLUMN legacy TEXT")
    result = run_cli(fresh, "schema", "check")
    assert result.exit_code == 1
    assert "INDEX incidents: index incidents_tenant_id_status on (tenant_id, status) is missing" in result.output
    assert "warning COLUMN_EXTRA incidents: column legacy is not in the model" in result.output


def test_partial_index_replaced_by_a_full_one_is_named(fresh, run_cli):
    alter(fresh, "DROP INDEX governance_signals_active",
          "CREATE UNIQUE INDEX governance_signals_active ON governance_signals (scope, signal_type)")
    result = run_cli(fresh, "schema", "check")
    assert result.exit_code == 1
    assert ("INDEX governance_signals: unique index governance_signals_active on "
            "(scope, signal_type) where superseded_at is null is missing") in result.output


def test_partial_index_predicate_ignores_quoting_and_case(fresh):
    alter(fresh, "DROP INDEX governance_signals_active",
          "CREATE UNIQUE INDEX governance_signals_active ON governance_signals (scope, signal_type) "
          "where superseded_at is null")
    from hoc_drivers.db import connect_database
    assert check_schema_parity(connect_database(str(fresh))) == (True, [])


def test_a_missing_or_changed_trigger_is_named(fresh, run_cli):
    alter(fresh, "DROP TRIGGER worker_runs_immutable_guard")
    result = run_cli(fresh, "schema", "check")
    assert result.exit_code == 1
    assert "TRIGGER worker_runs: trigger worker_runs_immutable_guard is missing" in result.output
    alter(fresh, "CREATE TRIGGER worker_runs_immutable_guard BEFORE UPDATE ON worker_runs "
                 "BEGIN SELECT 1; END")
    result = run_cli(fresh, "schema", "check")
    assert result.exit_code == 1
    assert "trigger worker_runs_immutable_guard differs from the model's" in result.output
    alter(fresh, "DROP TRIGGER worker_runs_immutable_guard")
    init_database(str(fresh)).close()  # init restores it
    assert run_cli(fresh, "schema", "check").exit_code == 0


def test_every_difference_is_listed_and_hard_fail_raises(fresh):
    alter(fresh, "DROP TABLE events", "ALTER TABLE runs DROP COLUMN agent_id")
    from hoc_drivers.db import connect_database
    db = connect_database(str(fresh))
    kinds = sorted(i.kind for i in compare_schema(db) if i.is_error)
    assert kinds == ["COLUMN_MISSING", "TABLE_MISSING"]
    with pytest.raises(SchemaParityError) as error:
        check_schema_parity(db)
    assert len(error.value.errors) == 2
    assert "TABLE_MISSING events" in str(error.value)


def test_cost_tables_hard_fail(fresh):
    from hoc_drivers.db import connect_database
    alter(fresh, "DROP TABLE IF EXISTS cost_records")
    db = connect_database(str(fresh))
    with pytest.raises(SchemaParityError, match="cost_records"):
        check_m26_cost_tables(db)
    with pytest.raises(SchemaParityError):
        run_startup_parity_check(db)


def test_cost_tables_must_match_exactly_even_an_extra_column(fresh):
    from hoc_drivers.db import connect_database
    alter(fresh, "ALTER TABLE cost_records ADD COLUMN legacy TEXT")
    db = connect_database(str(fresh))
    assert check_schema_parity(db) == (True, [])  # elsewhere an extra column is only a warning
    with pytest.raises(SchemaParityError, match="COLUMN_EXTRA cost_records: column legacy"):
        check_m26_cost_tables(db)
