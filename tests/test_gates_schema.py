"""The start-up guard's cheap check (hoc_drivers.schema_digest) needs no Peewee, and its
constant cannot go stale: it is regenerated here from the models."""
import sqlite3

import pytest

from conftest import alter
from hoc_drivers.db import init_database
from hoc_drivers.models import ALL_MODELS
from hoc_drivers.schema_digest import SCHEMA_DIGEST, SCHEMA_VERSION, STATEMENTS_SQL, is_current, schema_digest
from hoc_drivers.schema_parity import expected_digest


def test_the_digest_is_the_models_schema():
    """A schema change that leaves SCHEMA_DIGEST as it was fails here: update the constant to
    `python -c "from hoc_drivers.schema_parity import expected_digest; print(expected_digest())"`."""
    assert SCHEMA_DIGEST == expected_digest()


def test_a_change_of_the_models_changes_the_digest():
    assert expected_digest(tuple(ALL_MODELS[:-1])) != expected_digest()


def current(path):
    conn = sqlite3.connect(path)
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        return is_current(version, [sql for (sql,) in conn.execute(STATEMENTS_SQL)])
    finally:
        conn.close()


@pytest.mark.parametrize("statement", [
    "CREATE INDEX extra ON incidents (title)",
    "DROP INDEX governance_signals_active",
    "ALTER TABLE incidents ADD COLUMN legacy TEXT",
    "CREATE TABLE app_notes (note TEXT)",
    f"PRAGMA user_version = {SCHEMA_VERSION - 1}",
])
def test_what_init_writes_passes_and_any_change_does_not(tmp_path, statement):
    path = tmp_path / "hoc.db"
    init_database(str(path)).close()
    assert current(path)
    alter(path, statement)
    assert not current(path)


def test_the_digest_ignores_the_order_of_the_statements():
    statements = ["CREATE TABLE a (x)", "CREATE TABLE b (y)"]
    assert schema_digest(statements) == schema_digest(reversed(statements)) != schema_digest(statements[:1])
