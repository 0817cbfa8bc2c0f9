"""Shared test helpers (fixtures come from the hoc_drivers.testing plugin)."""
import sqlite3

import pytest
from click.testing import CliRunner

import cli


@pytest.fixture
def run_cli():
    """Invoke the CLI in-process: run_cli(db_path, *args) -> click Result."""
    def invoke(db_path, *args):
        runner = CliRunner()
        return runner.invoke(cli.cli, ["--db", str(db_path), *args])
    return invoke


def dump(path):
    """Every row of the database file at `path` (SQL text), to compare before and after."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def alter(path, *statements):
    """Run `statements` on the file at `path` behind the library's back (drift, damage)."""
    conn = sqlite3.connect(path)
    for sql in statements:
        conn.execute(sql)
    conn.commit()
    conn.close()
