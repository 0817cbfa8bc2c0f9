"""One guard, two databases: URL dispatch, per-dialect statements and PostgreSQL's control words."""
import pytest

from hoc_drivers import dialect
from hoc_drivers.alert_driver import _SELECT_DUE
from hoc_drivers.commit_guard import GuardedSqliteDatabase
from hoc_drivers.db import is_postgresql_url, open_database
from hoc_drivers.ledger import _UPSERT_WITH_FIELD
from hoc_drivers.models.cost import WorkerRun
from hoc_drivers.schema_parity import compare_schema

pytest.importorskip("psycopg", reason="the pg extra (pip install -e '.[test,pg]') is not installed")
from hoc_drivers.pg_guard import GuardedPostgresqlDatabase, is_control  # noqa: E402 (needs psycopg)

PG = GuardedPostgresqlDatabase("postgresql://nobody@/nowhere")  # never connected: SQL only
SQLITE = GuardedSqliteDatabase(":memory:")


def test_a_sqlite_url_opens_the_file_and_a_postgresql_url_is_recognised(tmp_path):
    db = open_database(f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(db, GuardedSqliteDatabase) and (tmp_path / "a.db").exists()
    db.close()
    assert is_postgresql_url("postgresql://u@h/db") and is_postgresql_url("postgres://h/db")
    assert not is_postgresql_url(str(tmp_path / "postgresql.db"))


def test_a_prepared_statement_is_built_once_per_dialect():
    sqlite_sql, _ = _SELECT_DUE.sql(SQLITE)
    pg_sql, _ = _SELECT_DUE.sql(PG)
    assert "?" in sqlite_sql and "FOR UPDATE" not in sqlite_sql
    assert "%s" in pg_sql and pg_sql.endswith("FOR UPDATE SKIP LOCKED")
    assert "json_patch(" in _UPSERT_WITH_FIELD.sql(SQLITE)[0]
    assert "hoc_json_merge_patch(" in _UPSERT_WITH_FIELD.sql(PG)[0]


def test_each_dialect_has_its_begin_and_its_trigger_ddl():
    assert dialect.begin_statement(SQLITE) == "BEGIN IMMEDIATE"
    assert dialect.begin_statement(PG) == "BEGIN READ WRITE"
    ddl = WorkerRun.TRIGGERS["worker_runs_immutable_guard"]
    assert ddl["sqlite"][0].startswith("CREATE TRIGGER IF NOT EXISTS worker_runs_immutable_guard")
    assert "IS DISTINCT FROM" in ddl["postgresql"][1] and "IS NOT OLD" not in ddl["postgresql"][1]


@pytest.mark.parametrize("sql", ["BEGIN", "/* hidden */ begin isolation level serializable",
                                 "-- note\n COMMIT", "(rollback)", "End", "savepoint x",
                                 "RELEASE x", "START TRANSACTION", "ABORT",
                                 "SET default_transaction_read_only = off", "reset all",
                                 "DISCARD ALL", "PREPARE TRANSACTION 'x'", b"commit"])
def test_postgresql_transaction_and_session_control_is_recognised_however_spelled(sql):
    assert is_control(sql)


@pytest.mark.parametrize("sql", ["SELECT 1", "INSERT INTO t VALUES (1)", "WITH x AS (SELECT 1) "
                                 "DELETE FROM t", "/* begin */ SELECT 'commit'", "settle()"])
def test_other_statements_are_left_to_the_server(sql):
    assert not is_control(sql)


def test_schema_parity_reads_the_catalog_of_either_backend(hoc_db, hoc_coordinator):
    assert compare_schema(hoc_db) == []
    with hoc_coordinator.transaction() as tx:
        tx.db.execute_sql("DROP TRIGGER worker_runs_immutable_guard" + (
            " ON worker_runs" if dialect.of(hoc_db) == dialect.POSTGRESQL else ""))
        tx.db.execute_sql("ALTER TABLE notifications DROP COLUMN metric")
    found = {(issue.kind, issue.table) for issue in compare_schema(hoc_db)}
    assert found == {("TRIGGER", "worker_runs"), ("COLUMN_MISSING", "notifications")}
