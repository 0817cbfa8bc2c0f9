"""The self-audit reads our own source and catches commits outside the coordinator."""
import json
import shutil
from pathlib import Path

import pytest

import hoc_drivers
from hoc_drivers.audit import DRIVERS, audit_module


@pytest.fixture
def package_copy(tmp_path):
    target = tmp_path / "hoc_drivers"
    shutil.copytree(Path(hoc_drivers.__file__).parent, target,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_our_package_passes_with_thirteen_rows(run_cli, tmp_path):
    result = run_cli(tmp_path / "a.db", "audit", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert [r["script"] for r in rows] == [f"{name}.py" for name in DRIVERS]
    assert len(rows) == 13
    by_script = {r["script"]: r for r in rows}
    assert by_script["transaction_coordinator.py"]["transaction"] == "OWNS COMMIT"
    assert all(r["verdict"] == "OK" for r in rows)
    assert not (tmp_path / "a.db").exists()  # the audit reads source, not the database


def test_an_added_module_that_commits_fails_the_audit(run_cli, package_copy, tmp_path):
    (package_copy / "rogue_sync.py").write_text(
        '"""Syncs things."""\nACCESS = "WRITE"\n\ndef sync(db):\n    db.commit()\n')
    result = run_cli(tmp_path / "a.db", "audit", "--source", str(package_copy))
    assert result.exit_code == 1
    assert "rogue_sync.py" in result.output
    assert "VIOLATION" in result.output


def test_a_driver_that_commits_or_lies_about_access_is_a_violation(package_copy):
    ledger = package_copy / "ledger.py"
    ledger.write_text(ledger.read_text() + "\n\ndef flush(db):\n    db.execute_sql('COMMIT')\n")
    row = audit_module(ledger, "ledger")
    assert (row.transaction, row.verdict) == ("OWNS COMMIT", "VIOLATION")

    reader = package_copy / "guard_cache.py"
    reader.write_text('"""Reads."""\nACCESS = "READ"\n\ndef sneaky(Model):\n    Model.insert(x=1).execute()\n')
    row = audit_module(reader, "guard_cache")
    assert row.verdict == "VIOLATION" and "declared READ but writes" in row.problems[0]


def test_class_level_access_is_checked(package_copy):
    module = package_copy / "schema_parity.py"
    module.write_text('"""Doc."""\nACCESS = "READ+WRITE"\n\nclass ThingReader:\n'
                      '    ACCESS = "READ"\n\n    def touch(self, Thing):\n'
                      '        Thing.update(x=1).execute()\n')
    row = audit_module(module, "schema_parity")
    assert row.verdict == "VIOLATION"
    assert "class ThingReader declared READ but writes" in row.problems[0]
    assert "ThingReader: READ" in row.access


def test_docstrings_mentioning_commit_are_not_commits(package_copy):
    module = package_copy / "alert_emitter.py"
    module.write_text('"""COMMIT"""\nACCESS = "READ"\n\ndef f(coordinator):\n'
                      '    with coordinator.transaction():\n        pass\n')
    assert audit_module(module, "alert_emitter").verdict == "OK"


def _throwaway(tmp_path, expression):
    """Audit a throwaway driver, declared READ, that sends `expression` (Python source)."""
    path = tmp_path / "throwaway.py"
    path.write_text('"""Throwaway driver."""\nACCESS = "READ"\n\n\n'
                    f"def run(db, name):\n    return db.execute_sql({expression})\n")
    return audit_module(path, "throwaway")


@pytest.mark.parametrize("expression", [
    '"/* x */ COMMIT"', '"commit;--"', '" -- c\\n begin immediate"', '"SAVEPOINT x"',
    '"RELEASE x"', '"end"', '"ROLLBACK TO x"', '"SELECT 1; Commit"', '"COM" + "MIT"',
    'f"SAVEPOINT {name}"', '"RELEASE " + name', 'f"{name}COMMIT"', 'f"COMMIT{name}"',
    'getattr(db, "commit")()',
])
def test_transaction_control_is_a_commit_however_it_is_spelled(tmp_path, expression):
    row = _throwaway(tmp_path, expression)
    assert (row.transaction, row.verdict) == ("OWNS COMMIT", "VIOLATION"), row.problems
    assert row.problems[0].startswith("commits outside the coordinator")


@pytest.mark.parametrize("expression", [
    '"WITH a AS (SELECT 1) INSERT INTO events (id, topic) SELECT 1, 2 FROM a"',
    '"WITH a AS (SELECT 1) INSERT INTO elsewhere SELECT * FROM a"',  # a table not in our schema
    '"/* tidy */ delete from runs"', '"REPLACE INTO discovery_ledger (id) VALUES (?)"',
    '"DROP TABLE IF EXISTS nowhere"', 'f"UPDATE {name} SET x = 1"', '"INS" + "ERT INTO runs (id) VALUES (1)"',
])
def test_write_sql_is_a_write_however_it_is_spelled(tmp_path, expression):
    row = _throwaway(tmp_path, expression)
    assert (row.transaction, row.verdict) == ("Flush only", "VIOLATION"), row.problems
    assert row.problems[0].startswith("declared READ but writes")


@pytest.mark.parametrize("expression", [
    '"commitment"', '"begin the run"', '"End of the run."', '"SELECT id FROM runs WHERE tenant_id = ?"',
    '"SELECT * FROM elsewhere"', 'f"commit failed: {name}"', '"update " + name + " failed"', '""',
])
def test_harmless_strings_are_neither_commits_nor_writes(tmp_path, expression):
    row = _throwaway(tmp_path, expression)
    assert (row.transaction, row.verdict) == ("Forbidden", "OK"), row.problems


def test_a_prepared_insert_is_a_write(tmp_path):
    path = tmp_path / "throwaway.py"
    path.write_text('"""Throwaway driver."""\nfrom hoc_drivers.models.base import PreparedInsert\n'
                    'from hoc_drivers.models.runs import Run\nACCESS = "READ"\n\n'
                    '_INSERT = PreparedInsert(Run, ("id", "tenant_id"))\n')
    row = audit_module(path, "throwaway")
    assert (row.transaction, row.verdict) == ("Flush only", "VIOLATION"), row.problems
