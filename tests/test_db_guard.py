"""The database refuses commits and writes that do not come through the coordinator."""
import os
import stat
import types

import pytest

from hoc_drivers.db import CommitForbidden, open_database
from hoc_drivers.models.runs import Run
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
        Run.insert(id="r1", tenant_id="t1").execute()
    with pytest.raises(CommitForbidden):
        Run.update(status="x").execute()
    with pytest.raises(CommitForbidden):
        hoc_db.execute_sql("DELETE FROM runs")
    assert Run.select().count() == 0


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
    RunCompletionTransaction(coordinator).execute("r1", "t1", "failed")
    assert Run.select().count() == 0  # the run row itself is not created by completion


def test_refusals_are_recorded_even_when_swallowed(hoc_db, driver_module):
    from hoc_drivers.testing import assert_no_stray_commits

    assert_no_stray_commits(hoc_db)
    try:
        driver_module.commit_directly(hoc_db)
    except CommitForbidden:
        pass  # a careless driver hiding the refusal
    with pytest.raises(AssertionError, match="commit\\(\\) refused"):
        assert_no_stray_commits(hoc_db)
