"""The database refuses commits and writes that do not come through the coordinator."""
import os
import sqlite3
import stat
import types

import peewee
import pytest

from hoc_drivers.db import CommitForbidden, open_database
from hoc_drivers.models.runs import Run
from hoc_drivers.schema_parity import SCHEMA_VERSION
from hoc_drivers.testing import other_connection, schema_snapshot
from hoc_drivers.transaction_coordinator import RunCompletionTransaction, TransactionCoordinator

DRIVER_CODE = """
def commit_directly(db):
    db.commit()

def open_atomic(db):
    with db.atomic():
        pass

def open_transaction(db):
    with db.transaction():
        pass

def manual(db):
    with db.manual_commit():
        pass

def raw_sql(db, sql):
    db.execute_sql(sql)
"""


@pytest.fixture
def driver_module():
    """Code that lives in a driver module (not the coordinator)."""
    module = types.ModuleType("hoc_drivers.ledger")
    exec(compile(DRIVER_CODE, "hoc_drivers/ledger.py", "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("call", ["commit_directly", "open_atomic", "open_transaction", "manual"])
def test_transaction_control_from_a_driver_is_refused(hoc_db, driver_module, call):
    with pytest.raises(CommitForbidden, match=r"hoc_drivers\.ledger"):
        getattr(driver_module, call)(hoc_db)


@pytest.mark.parametrize("sql", ["BEGIN", "BEGIN IMMEDIATE", "COMMIT", "ROLLBACK", "END",
                                 "SAVEPOINT x", "RELEASE x", "  commit"])
def test_raw_transaction_sql_from_a_driver_is_refused(hoc_db, driver_module, sql):
    with pytest.raises(CommitForbidden, match="hoc_drivers.ledger"):
        driver_module.raw_sql(hoc_db, sql)


def test_commit_inside_a_coordinator_transaction_is_still_refused(hoc_db, hoc_coordinator,
                                                                  driver_module):
    with hoc_coordinator.transaction():
        with pytest.raises(CommitForbidden):
            driver_module.commit_directly(hoc_db)
        with pytest.raises(CommitForbidden):
            driver_module.open_atomic(hoc_db)


def test_write_outside_a_transaction_is_refused_and_reads_are_not(hoc_db):
    with pytest.raises(CommitForbidden, match="no coordinator transaction"):
        Run.insert(id="r1", tenant_id="t1").execute(hoc_db)
    with pytest.raises(CommitForbidden):
        Run.update(status="x").execute(hoc_db)
    with pytest.raises(CommitForbidden):
        hoc_db.execute_sql("DELETE FROM runs")
    assert Run.select().count(hoc_db) == 0


# The commit guard is SQLite's authorizer: spelling does not matter, nor does the path a
# statement takes to SQLite. Each refusal names this test module and changes nothing.
INSERT_EVENT = ("INSERT INTO events (id, topic, payload, created_at) "
                "VALUES ('e1', 't', '{}', '2026-01-01')")
CONTROL_SQL = ["BEGIN", "/* hidden */ BEGIN IMMEDIATE", "-- note\n begin exclusive", "bEgIn",
               "COMMIT", "  /**/commit", "End", "ROLLBACK", "SAVEPOINT x", "/*x*/ SaVePoInT y",
               "RELEASE x"]
WRITE_SQL = [INSERT_EVENT, "/* just a comment */ " + INSERT_EVENT, "-- line\n" + INSERT_EVENT,
             "WITH e AS (SELECT 'e1' AS id) INSERT INTO events (id, topic, payload, created_at) "
             "SELECT id, 't', '{}', '2026-01-01' FROM e",
             pytest.param("REPLACE INTO events (id, topic, payload, created_at) VALUES ('e1', 't', '{}', 'x')",
                          marks=pytest.mark.sqlite_only),
             INSERT_EVENT + " ON CONFLICT DO NOTHING",
             "WITH gone AS (SELECT 1) DELETE FROM runs", "CREATE TABLE sneaky (x INTEGER)",
             "DROP TABLE events"]
PATHS = {"execute_sql": lambda db, sql: db.execute_sql(sql),
         "connection().execute": lambda db, sql: db.connection().execute(sql),
         "connection().cursor().execute": lambda db, sql: db.connection().cursor().execute(sql),
         "connection().executescript": lambda db, sql: db.connection().executescript(sql)}

# executescript is sqlite3's own method (psycopg has none)
PATH_PARAMS = [pytest.param(p, marks=pytest.mark.sqlite_only) if "executescript" in p else p for p in PATHS]


def _schema_and_rows(db):
    conn = other_connection(db)
    try:
        return (schema_snapshot(db), conn.execute("SELECT count(*) FROM events").fetchone(),
                conn.execute("SELECT count(*) FROM runs").fetchone())
    finally:
        conn.close()


@pytest.mark.parametrize("path", PATH_PARAMS)
@pytest.mark.parametrize("sql", CONTROL_SQL)
def test_transaction_control_is_refused_however_spelled_and_sent(hoc_db, hoc_coordinator, sql, path):
    before = _schema_and_rows(hoc_db)
    with pytest.raises(CommitForbidden, match="test_db_guard"):
        PATHS[path](hoc_db, sql)
    with hoc_coordinator.transaction():  # inside a transaction it is refused just the same
        with pytest.raises(CommitForbidden, match="only the transaction coordinator"):
            PATHS[path](hoc_db, sql)
    assert hoc_db.current_unit() is None
    assert _schema_and_rows(hoc_db) == before


@pytest.mark.parametrize("path", PATH_PARAMS)
@pytest.mark.parametrize("sql", WRITE_SQL)
def test_a_write_outside_a_transaction_is_refused_however_spelled_and_sent(hoc_db, sql, path):
    before = _schema_and_rows(hoc_db)
    with pytest.raises(CommitForbidden, match="test_db_guard.*|no coordinator transaction"):
        PATHS[path](hoc_db, sql)
    assert _schema_and_rows(hoc_db) == before
    assert hoc_db.refusals and "test_db_guard" in hoc_db.refusals[-1]


@pytest.mark.sqlite_only
def test_executescript_inside_a_transaction_is_refused_since_it_would_commit_first(hoc_db,
                                                                                   hoc_coordinator):
    with hoc_coordinator.transaction():
        with pytest.raises(CommitForbidden, match="test_db_guard"):
            hoc_db.connection().executescript(INSERT_EVENT)
    assert _schema_and_rows(hoc_db)[1] == (0,)


@pytest.mark.parametrize("path", [p for p in PATHS if "executescript" not in p])
def test_the_same_writes_inside_a_coordinator_transaction_commit_at_block_exit(hoc_db, hoc_coordinator,
                                                                             path):
    with hoc_coordinator.transaction():
        PATHS[path](hoc_db, "/* c */ " + INSERT_EVENT)
        assert _schema_and_rows(hoc_db)[1] == (0,)  # not visible elsewhere before COMMIT
    assert _schema_and_rows(hoc_db)[1] == (1,)
    assert hoc_db.refusals == []


@pytest.mark.parametrize("path", [p for p in PATHS if "executescript" not in p])
def test_a_cached_write_replayed_after_its_transaction_is_refused(hoc_db, hoc_coordinator, path):
    """A statement SQLite prepared (and Python cached) inside a transaction meets the guard
    again when the same text is sent after COMMIT."""
    with hoc_coordinator.transaction():
        PATHS[path](hoc_db, INSERT_EVENT)
    with pytest.raises(CommitForbidden, match="no coordinator transaction"):
        PATHS[path](hoc_db, INSERT_EVENT.replace("e1", "e1"))
    assert _schema_and_rows(hoc_db)[1] == (1,)


def test_peewee_and_connection_transaction_methods_are_refused(hoc_db, driver_module):
    for call in (hoc_db.commit, hoc_db.rollback, hoc_db.begin, hoc_db.atomic, hoc_db.transaction,
                 hoc_db.savepoint, hoc_db.manual_commit, hoc_db.connection().commit,
                 hoc_db.connection().rollback):
        with pytest.raises(CommitForbidden, match="test_db_guard"):
            call()


def test_pragmas_and_owner_only_file(tmp_path):
    path = tmp_path / "new.db"
    db = open_database(str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1
    assert db.execute_sql("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    assert db.execute_sql("PRAGMA busy_timeout").fetchone()[0] >= 5000


def test_environment_variable_names_the_default_database(tmp_path, monkeypatch):
    monkeypatch.setenv("HOC_DRIVERS_DB", str(tmp_path / "env.db"))
    assert open_database().database == str(tmp_path / "env.db")


def test_memory_database_works(hoc_memory_db):
    coordinator = TransactionCoordinator(hoc_memory_db)
    RunCompletionTransaction(coordinator).execute("t1", "r1", "failed")
    assert Run.select().count(hoc_memory_db) == 0  # the run row itself is not created by completion


def test_refusals_are_recorded_even_when_swallowed(hoc_db, driver_module):
    from hoc_drivers.testing import assert_no_stray_commits

    assert_no_stray_commits(hoc_db)
    try:
        driver_module.commit_directly(hoc_db)
    except CommitForbidden:
        pass  # a careless driver hiding the refusal
    with pytest.raises(AssertionError, match="commit\\(\\) refused"):
        assert_no_stray_commits(hoc_db)


# Holes an attacker's review found in the first authorizer guard, each closed.

@pytest.mark.sqlite_only
def test_a_statement_rollback_inside_a_coordinator_block_cannot_commit_half(hoc_db, hoc_coordinator):
    """INSERT OR ROLLBACK ends SQLite's transaction: later writes must not autocommit, and the
    block must not report a commit of work SQLite threw away."""
    committed = []
    with pytest.raises(CommitForbidden, match="rolled the transaction back"):
        with hoc_coordinator.transaction() as tx:
            tx.on_commit(lambda: committed.append(True))
            hoc_db.execute_sql(INSERT_EVENT)
            with pytest.raises(peewee.IntegrityError):  # the duplicate id: SQLite rolls back
                hoc_db.execute_sql(INSERT_EVENT.replace("INSERT", "INSERT OR ROLLBACK"))
            hoc_db.execute_sql(INSERT_EVENT.replace("e1", "e2"))
    assert committed == [] and _schema_and_rows(hoc_db)[1] == (0,)
    with hoc_coordinator.transaction():  # the connection is usable again
        hoc_db.execute_sql(INSERT_EVENT)
    assert _schema_and_rows(hoc_db)[1] == (1,)


@pytest.mark.sqlite_only
def test_a_statement_first_prepared_by_a_bare_cursor_cannot_prime_the_cache(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction():
        with pytest.raises(sqlite3.DatabaseError):
            sqlite3.Cursor(hoc_db.connection()).execute(INSERT_EVENT)
    with pytest.raises(CommitForbidden):
        hoc_db.execute_sql(INSERT_EVENT)
    assert _schema_and_rows(hoc_db)[1] == (0,)


@pytest.mark.parametrize("sql", ["PRAGMA user_version = 42", "pragma Application_ID=7",
                                 "PRAGMA journal_mode = DELETE", "PRAGMA foreign_keys = OFF",
                                 "PRAGMA writable_schema = ON", "ATTACH DATABASE ':memory:' AS other"])
@pytest.mark.sqlite_only
def test_pragmas_that_change_the_file_and_attach_are_writes(hoc_db, sql):
    with pytest.raises(CommitForbidden, match="no coordinator transaction"):
        hoc_db.execute_sql(sql)
    assert hoc_db.execute_sql("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert hoc_db.execute_sql("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert hoc_db.execute_sql("PRAGMA foreign_keys").fetchone()[0] == 1


@pytest.mark.sqlite_only
def test_a_writable_blob_needs_a_coordinator_transaction(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction():
        hoc_db.execute_sql("INSERT INTO events (id, topic, payload, created_at) VALUES "
                           "('e1', 't', '{}', '2026-01-01')")
    rowid = hoc_db.execute_sql("SELECT rowid FROM events").fetchone()[0]
    with pytest.raises(CommitForbidden, match="blobopen"):
        hoc_db.connection().blobopen("events", "topic", rowid)
    with hoc_db.connection().blobopen("events", "topic", rowid, readonly=True) as blob:
        assert blob.read() == b"t"


def test_opening_without_create_refuses_a_missing_file_and_creates_nothing(tmp_path, hoc_db):
    from hoc_drivers.db import DatabaseMissing, DatabaseOpenError, connect_database

    missing = tmp_path / "typo.db"
    with pytest.raises(DatabaseMissing, match=f"database {missing} does not exist") as error:
        open_database(str(missing), create=False)
    assert isinstance(error.value, DatabaseOpenError) and error.value.path == str(missing)
    assert not missing.exists()
    existing = connect_database(hoc_db.database, create=False)
    assert "governance_signals" in existing.get_tables()
    existing.close()
