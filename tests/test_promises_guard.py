"""The commit guard's promises (README "Guarantees"), one transaction method or statement form
at a time, from code that lives in a driver module."""
import types

import pytest

from hoc_drivers.db import CommitForbidden
from hoc_drivers.testing import in_open_transaction, other_connection

DRIVER_CODE = """
def call(db, method):
    result = getattr(db, method)()
    if hasattr(result, "__enter__"):
        with result:
            pass

def raw_sql(db, sql):
    db.execute_sql(sql)
"""
INSERT_RUN = ("INSERT INTO runs (id, tenant_id, status, incident_count, created_at, updated_at) "
              "VALUES ('r1', 't1', 'queued', 0, '2026-01-01 00:00:00', '2026-01-01 00:00:00')")
METHODS = ["begin", "rollback", "commit", "transaction", "atomic", "savepoint", "manual_commit"]


@pytest.fixture
def driver():
    """Code that lives in a driver module (not the coordinator)."""
    module = types.ModuleType("hoc_drivers.ledger")
    exec(compile(DRIVER_CODE, "hoc_drivers/ledger.py", "exec"), module.__dict__)
    return module


def seed_event(coordinator):
    with coordinator.transaction() as tx:
        tx.db.execute_sql("INSERT INTO events (id, topic, payload, created_at) "
                          "VALUES ('e1', 't', '{}', '2026-01-01 00:00:00')")


def committed(db, table="runs", columns="id, tenant_id, status"):
    """What another connection sees in `table`: only committed rows."""
    other = other_connection(db)
    try:
        return other.execute(f"SELECT {columns} FROM {table} ORDER BY 1").fetchall()
    finally:
        other.close()


@pytest.mark.parametrize("method", METHODS)
def test_the_guard_refuses_each_transaction_method_from_a_driver(hoc_db, driver, method):
    with pytest.raises(CommitForbidden, match=rf"{method}\(\) refused.*hoc_drivers\.ledger"):
        driver.call(hoc_db, method)
    assert hoc_db.current_unit() is None and not in_open_transaction(hoc_db)


@pytest.mark.parametrize("method", METHODS)
def test_the_guard_refuses_each_nested_transaction_method_and_the_coordinators_work_commits(
        hoc_db, hoc_coordinator, driver, method):
    with hoc_coordinator.transaction() as tx:
        tx.db.execute_sql(INSERT_RUN)
        with pytest.raises(CommitForbidden, match=r"hoc_drivers\.ledger"):
            driver.call(hoc_db, method)
        assert hoc_coordinator.current() is tx and committed(hoc_db) == []  # nothing ended early
    assert committed(hoc_db) == [("r1", "t1", "queued")]
    assert hoc_db.current_unit() is None


@pytest.mark.parametrize("method", ["commit", "rollback"])
def test_the_guard_refuses_the_connections_own_commit_and_rollback_inside_a_transaction(
        hoc_db, hoc_coordinator, method):
    with hoc_coordinator.transaction() as tx:
        tx.db.execute_sql(INSERT_RUN)
        with pytest.raises(CommitForbidden, match=rf"{method}\(\) refused"):
            getattr(hoc_db.connection(), method)()
        assert in_open_transaction(hoc_db) and committed(hoc_db) == []
    assert committed(hoc_db) == [("r1", "t1", "queued")]


# On `events`, which no foreign key names: a delete or replace there is only that, with no
# cascade whose own writes the guard would refuse instead. REPLACE INTO and INSERT OR REPLACE
# are SQLite's own SQL (PostgreSQL has neither).
@pytest.mark.parametrize("sql", [
    "WITH doomed AS (SELECT id FROM events) DELETE FROM events WHERE id IN (SELECT id FROM doomed)",
    "WITH doomed AS (SELECT 1) DELETE FROM events",
    pytest.param("REPLACE INTO events (id, topic, payload, created_at) VALUES ('e1', 'intruder', '{}', 'x')",
                 marks=pytest.mark.sqlite_only),
    pytest.param("INSERT OR REPLACE INTO events (id, topic, payload, created_at) "
                 "VALUES ('e1', 'intruder', '{}', 'x')", marks=pytest.mark.sqlite_only),
    "WITH s AS (SELECT 'hijacked' AS v) UPDATE events SET topic = (SELECT v FROM s)",
])
def test_the_guard_refuses_with_delete_and_replace_outside_a_transaction(
        hoc_db, hoc_coordinator, driver, sql):
    seed_event(hoc_coordinator)
    before = committed(hoc_db, "events", "*")
    assert [row[0] for row in before] == ["e1"]
    with pytest.raises(CommitForbidden, match=r"no coordinator transaction.*hoc_drivers\.ledger"):
        driver.raw_sql(hoc_db, sql)
    assert committed(hoc_db, "events", "*") == before
    with pytest.raises(CommitForbidden):  # the statement is now cached: refused just the same
        driver.raw_sql(hoc_db, sql)
    assert committed(hoc_db, "events", "*") == before
