"""Schema parity: a fresh database matches; drift is named, difference by difference."""
import json
import re
import shutil
import sqlite3
from datetime import timedelta

import pytest
from conftest import alter

from hoc_drivers.db import connect_database, init_database
from hoc_drivers.models.base import UtcDateTimeField, utcnow
from hoc_drivers.models.cost import CostAnomaly
from hoc_drivers.schema_parity import (
    SchemaParityError, check_m26_cost_tables, check_schema_parity, compare_schema,
    run_startup_parity_check)


@pytest.fixture
def fresh(tmp_path, run_cli):
    path = tmp_path / "parity.db"
    assert run_cli(path, "init").exit_code == 0
    return path


def test_fresh_database_matches(fresh, run_cli):
    result = run_cli(fresh, "schema", "check")
    assert result.exit_code == 0, result.output
    assert "schema OK" in result.output
    db = init_database(str(fresh))
    assert check_schema_parity(db) == (True, [])
    assert run_startup_parity_check(db)["ok"]
    assert check_m26_cost_tables(db) is True


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


# The M26 cost tables as the server edition's migration 046 (and later ones) has them: per table
# a plain INSERT of the columns without a default, the defaults SQLite then fills in, and the
# timestamps it fills in with now.
PLAIN_INSERTS = {
    "feature_tags": ("(id, tenant_id, tag, display_name) VALUES ('f1', 'acme', 'support.chat', 'S')",
                     {"is_active": 1}, ("created_at", "updated_at")),
    "cost_records": ("(id, tenant_id, model, cost_cents) VALUES ('r1', 'acme', 'gpt', 1.5)",
                     {"input_tokens": 0, "output_tokens": 0}, ("created_at",)),
    "cost_anomalies": ("(id, tenant_id, anomaly_type, severity, entity_type, current_value_cents, "
                       "expected_value_cents, deviation_pct, message) VALUES ('a1', 'acme', "
                       "'USER_SPIKE', 'high', 'user', 300, 100, 200, 'spike')",
                       {"threshold_pct": 200.0, "resolved": 0, "breach_count": 1}, ("detected_at",)),
    "cost_budgets": ("(id, tenant_id, budget_type) VALUES ('b1', 'acme', 'tenant')",
                     {"warn_threshold_pct": 80, "hard_limit_enabled": 0, "is_active": 1},
                     ("created_at", "updated_at")),
    "cost_daily_aggregates": ("(id, tenant_id, date) VALUES ('d1', 'acme', '2026-01-01')",
                              {"total_cost_cents": 0.0, "request_count": 0, "total_input_tokens": 0,
                               "total_output_tokens": 0}, ("created_at", "updated_at")),
}
DEFAULTED_COLUMNS = [(table, column) for table, (_, defaults, times) in PLAIN_INSERTS.items()
                     for column in (*defaults, *times)]
SERVER_INDEXES = {
    "feature_tags_tag": "INDEX feature_tags: index feature_tags_tag on (tag) is missing",
    "cost_records_user_id": "INDEX cost_records: index cost_records_user_id on (user_id) is missing",
    "cost_records_feature_tag": "INDEX cost_records: index cost_records_feature_tag on (feature_tag) is missing",
    "cost_anomalies_snapshot_id": "INDEX cost_anomalies: index cost_anomalies_snapshot_id on (snapshot_id) is missing",
    "cost_daily_aggregates_tenant_id_feature_tag_date": "INDEX cost_daily_aggregates: index "
    "cost_daily_aggregates_tenant_id_feature_tag_date on (tenant_id, feature_tag, date) is missing",
}


def test_a_plain_insert_leaving_out_the_defaulted_columns_works(fresh):
    before = utcnow().replace(microsecond=0)  # SQLite's clock has milliseconds
    conn = sqlite3.connect(fresh)
    conn.row_factory = sqlite3.Row
    with conn:
        for table, (values, _, _) in PLAIN_INSERTS.items():
            conn.execute(f"INSERT INTO {table} {values}")
        conn.execute("INSERT INTO cost_anomalies (id, tenant_id, anomaly_type, severity, entity_type, "
                     "current_value_cents, expected_value_cents, deviation_pct, message, breach_count)"
                     " VALUES ('a2', 'acme', 'DRIFT', 'low', 'tenant', 1, 1, 0, 'm', NULL)")  # nullable
    after = utcnow() + timedelta(milliseconds=1)
    stamp = UtcDateTimeField()
    for table, (_, defaults, times) in PLAIN_INSERTS.items():
        row = conn.execute(f"SELECT * FROM {table} ORDER BY id LIMIT 1").fetchone()
        assert {column: row[column] for column in defaults} == defaults, table
        for column in times:  # the text form UtcDateTimeField writes, read back as aware UTC
            assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}", row[column]), row[column]
            assert stamp.db_value(stamp.python_value(row[column])) == row[column]
            assert before <= stamp.python_value(row[column]) <= after, (table, column)
    conn.close()
    db = connect_database(str(fresh))
    anomaly = CostAnomaly.select().where(CostAnomaly.id == "a1").get(db)
    assert (anomaly.threshold_pct, anomaly.resolved, anomaly.breach_count) == (200.0, False, 1)
    assert anomaly.detected_at.tzinfo is not None
    assert CostAnomaly.select().where(CostAnomaly.id == "a2").get(db).breach_count is None
    db.close()


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A freshly initialised database file (closed, so the file alone is the database)."""
    path = tmp_path_factory.mktemp("pristine") / "hoc.db"
    init_database(str(path)).close()
    return path


@pytest.fixture
def copy_of_fresh(pristine, tmp_path):
    """A copy of `pristine` this test may alter."""
    return shutil.copy(pristine, tmp_path / "copy.db")


def without_default(path, table, column):
    """Rebuild `table` in the file at `path` with `column`'s DEFAULT clause left out."""
    conn = sqlite3.connect(path)
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?",
                          (table,)).fetchone()
    indexes = [i for (i,) in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND "
                                           "tbl_name = ? AND sql IS NOT NULL", (table,))]
    default = next(r[4] for r in conn.execute(f"PRAGMA table_info({table})") if r[1] == column)
    conn.close()
    default = re.escape(default)  # an expression's text, without the parentheses it is written in
    rebuilt, found = re.subn(rf'("{column}" [^,]*?) DEFAULT (\({default}\)|{default})', r"\1", sql,
                             count=1)
    assert found == 1
    alter(path, f"ALTER TABLE {table} RENAME TO old_{table}", rebuilt,
          f"INSERT INTO {table} SELECT * FROM old_{table}", f"DROP TABLE old_{table}", *indexes)


def test_a_fresh_copy_passes_the_cost_table_check(copy_of_fresh):
    db = connect_database(str(copy_of_fresh))
    assert check_m26_cost_tables(db) is True
    assert run_startup_parity_check(db) == {"ok": True, "errors": [], "warnings": []}
    db.close()


@pytest.mark.parametrize("index", sorted(SERVER_INDEXES))
def test_each_server_index_of_the_cost_tables_is_required(copy_of_fresh, index):
    alter(copy_of_fresh, f"DROP INDEX {index}")
    db = connect_database(str(copy_of_fresh))
    with pytest.raises(SchemaParityError) as error:
        check_m26_cost_tables(db)
    assert [str(e) for e in error.value.errors] == [SERVER_INDEXES[index]]
    with pytest.raises(SchemaParityError):
        run_startup_parity_check(db)
    db.close()


@pytest.mark.parametrize("table, column", DEFAULTED_COLUMNS)
def test_each_database_default_of_the_cost_tables_is_required(copy_of_fresh, table, column):
    without_default(copy_of_fresh, table, column)
    db = connect_database(str(copy_of_fresh))
    with pytest.raises(SchemaParityError) as error:
        check_m26_cost_tables(db)
    [issue] = error.value.errors
    assert (issue.kind, issue.table, issue.is_error) == ("COLUMN_DEFAULT", table, True)
    assert issue.detail.startswith(f"column {column} has default None, expected ")
    with pytest.raises(SchemaParityError):
        run_startup_parity_check(db)
    db.close()


def test_a_cost_table_default_is_an_error_for_schema_check_too(copy_of_fresh, run_cli):
    without_default(copy_of_fresh, "cost_anomalies", "breach_count")
    result = run_cli(copy_of_fresh, "schema", "check")
    assert result.exit_code == 1
    assert ("error   COLUMN_DEFAULT cost_anomalies: column breach_count has default None, "
            "expected 1") in result.output


def test_a_default_elsewhere_is_a_warning(copy_of_fresh):
    conn = sqlite3.connect(copy_of_fresh)
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'aos_traces'").fetchone()
    indexes = [i for (i,) in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND "
                                           "tbl_name = 'aos_traces' AND sql IS NOT NULL")]
    conn.close()
    alter(copy_of_fresh, "DROP TABLE aos_traces",
          sql.replace('"status" VARCHAR(255) NOT NULL', '"status" VARCHAR(255) NOT NULL DEFAULT \'x\''),
          *indexes)
    db = connect_database(str(copy_of_fresh))
    assert check_schema_parity(db) == (True, [])
    report = run_startup_parity_check(db)
    assert report["ok"] and [str(w) for w in report["warnings"]] == [
        "COLUMN_DEFAULT aos_traces: column status has default 'x', expected None"]
    db.close()


@pytest.fixture
def populated(fresh):
    """`fresh` with 300 governance signals (their table spans many pages), checkpointed into the
    main file so a copy of it is the whole database."""
    conn = sqlite3.connect(fresh)
    with conn:
        conn.executemany("INSERT INTO governance_signals (id, signal_type, scope, decision, reason,"
                         " recorded_by, recorded_at) VALUES (?, 'CI_STATUS', ?, 'BLOCKED', ?, 'CI',"
                         " '2026-01-01 00:00:00')",
                         [(f"id-{i:05d}", f"scope-{i:05d}", "r" * 50) for i in range(300)])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return fresh


def corrupt_copy(path, name, offset, replacement):
    """A copy of the database at `path` with `replacement` written over its bytes at `offset`."""
    data = bytearray(path.read_bytes())
    data[offset:offset + len(replacement)] = replacement
    copy = path.with_name(name)
    copy.write_bytes(bytes(data))
    return copy


def table_page_header(path):
    """Where the governance_signals table's root b-tree page starts in the file."""
    conn = sqlite3.connect(path)
    page_size, root = conn.execute("SELECT (SELECT page_size FROM pragma_page_size), rootpage FROM "
                                   "sqlite_master WHERE name = 'governance_signals'").fetchone()
    conn.close()
    return (root - 1) * page_size


def test_a_corrupted_table_page_is_an_integrity_error(populated, run_cli):
    assert run_cli(populated, "schema", "check").exit_code == 0
    corrupted = corrupt_copy(populated, "page.db", table_page_header(populated), b"\xff" * 8)
    result = run_cli(corrupted, "schema", "check")
    assert result.exit_code == 1, result.output
    assert "error   INTEGRITY database: quick_check stopped: database disk image is malformed" in result.output
    assert "0 schema difference(s), 1 integrity problem(s)" in result.output
    data = json.loads(run_cli(corrupted, "schema", "check", "--json").output)
    assert data["ok"] is False and [i["kind"] for i in data["issues"]] == ["INTEGRITY"]


def test_an_index_out_of_step_with_its_table_needs_the_full_integrity_check(populated, run_cli):
    # row 124's scope in the table itself (followed by its decision), not in an index entry
    offset = populated.read_bytes().index(b"scope-00123BLOCKED")
    corrupted = corrupt_copy(populated, "index.db", offset, b"scopX")
    assert run_cli(corrupted, "schema", "check").exit_code == 0  # quick_check does not compare indexes
    result = run_cli(corrupted, "schema", "check", "--integrity")
    assert result.exit_code == 1, result.output
    assert "error   INTEGRITY database: row 124 missing from index governance_signals_active" in result.output


def test_the_startup_guard_takes_the_fast_path_only_for_an_exact_schema(fresh):
    from hoc_drivers.db import connect_database

    alter(fresh, "CREATE TABLE app_notes (note TEXT)")  # the embedding application's own table
    db = connect_database(str(fresh))
    assert run_startup_parity_check(db) == {"ok": True, "errors": [], "warnings": []}
    alter(fresh, "ALTER TABLE incidents ADD COLUMN legacy TEXT")
    report = run_startup_parity_check(db)
    assert report["ok"] and [str(w) for w in report["warnings"]] == [
        "COLUMN_EXTRA incidents: column legacy is not in the model"]
    db.close()
