"""Schema versions, `migrate` (a schema-1 fixture upgraded in place) and `backup` (online, under writers)."""
import multiprocessing
import shutil
import sqlite3
from pathlib import Path

from conftest import alter, dump
from peewee import SchemaManager, SqliteDatabase

from hoc_drivers.models import ALL_MODELS
from hoc_drivers.models.alerts import StoredAlertConfig
from hoc_drivers.schema_parity import SCHEMA_VERSION

SCHEMA_V1 = Path(__file__).resolve().parent.parent / "fixtures" / "schema_v1.db"
WRITERS, WRITES_PER_WRITER = 4, 400


def _v1_copy(tmp_path):
    path = tmp_path / "old.db"
    shutil.copyfile(SCHEMA_V1, path)
    return path


def _rows(path):
    """{table: sorted rows as dicts} of every table of the file at `path`."""
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    rows = {t: sorted((dict(r) for r in conn.execute(f'SELECT * FROM "{t}"')), key=repr) for t in tables}
    conn.close()
    return rows


def _user_version(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA user_version").fetchone()[0]
    finally:
        conn.close()


def test_init_records_the_schema_version(run_cli, tmp_path):
    assert run_cli(tmp_path / "new.db", "init").exit_code == 0
    assert _user_version(tmp_path / "new.db") == SCHEMA_VERSION


def test_commands_on_an_older_file_say_to_run_migrate_and_change_nothing(run_cli, tmp_path):
    path = _v1_copy(tmp_path)
    before = dump(path)
    for args in (["incidents", "list", "--tenant", "acme"], ["init"]):
        result = run_cli(path, *args)
        assert result.exit_code == 1
        assert "older schema (version 1); run `hoc-drivers migrate`" in result.stderr
    assert dump(path) == before


def test_migrate_keeps_every_row_and_passes_schema_check(run_cli, tmp_path):
    path = _v1_copy(tmp_path)
    before, before_dump = _rows(path), dump(path)
    result = run_cli(path, "migrate", "--json")
    assert result.exit_code == 0, result.output + result.stderr
    assert '"from_version": 1' in result.output and "COLUMN_MISSING incidents" in result.output
    after = _rows(path)
    assert sum(map(len, before.values())) >= 25
    for table, rows in before.items():  # every row kept, every old column unchanged
        columns = rows[0].keys() if rows else ()
        assert sorted(({c: row[c] for c in columns} for row in after[table]), key=repr) == rows, table
    assert all(row["cost_impact"] is None for row in after["incidents"])
    assert _user_version(path) == SCHEMA_VERSION
    (backup,) = tmp_path.glob("old.db.v1-*.bak")
    assert dump(backup) == before_dump
    assert run_cli(path, "schema", "check", "--integrity").exit_code == 0
    assert run_cli(path, "incidents", "list", "--tenant", "acme").exit_code == 0
    again = run_cli(path, "migrate")
    assert again.exit_code == 0 and "already current" in again.output
    assert len(list(tmp_path.glob("*.bak"))) == 1


def test_migrate_keys_the_ordered_tables_by_seq_keeping_their_order(run_cli, tmp_path):
    path = _v1_copy(tmp_path)
    present = _rows(path)
    ids = {m._meta.table_name: m._meta.primary_key.column_name for m in ALL_MODELS  # the text id
           if "seq" in m._meta.columns and m._meta.table_name in present}
    conn = sqlite3.connect(path)
    before = {t: conn.execute(f'SELECT rowid, "{ids[t]}" FROM "{t}" ORDER BY rowid').fetchall() for t in ids}
    conn.close()
    assert len(ids) >= 8 and sum(map(len, before.values())) >= 10
    assert run_cli(path, "migrate").exit_code == 0
    conn = sqlite3.connect(path)
    for table, id_column in ids.items():  # each row's old rowid is its seq
        assert conn.execute(f'SELECT seq, "{id_column}" FROM "{table}" ORDER BY seq').fetchall() == before[table]
    references = conn.execute("PRAGMA foreign_key_list(incident_events)").fetchone()[2:5]
    assert references == ("incidents", "incident_id", "id")
    conn.close()


def test_a_migration_that_cannot_finish_changes_nothing(run_cli, tmp_path):
    path = _v1_copy(tmp_path)
    memory = SqliteDatabase(":memory:")
    create, _ = SchemaManager(StoredAlertConfig, memory)._create_table(safe=False).query()
    memory.close()  # alert_configs (not in schema 1) with a column type migrate cannot change:
    alter(path, create.replace('"max_alerts_per_run" INTEGER', '"max_alerts_per_run" TEXT'))
    before = dump(path)
    result = run_cli(path, "migrate", "--backup", str(tmp_path / "b.db"))
    assert result.exit_code == 1
    assert "left differences, nothing changed: COLUMN_TYPE alert_configs" in result.stderr
    assert dump(path) == before
    assert dump(tmp_path / "b.db") == before


def test_migrate_refuses_to_rebuild_a_table_that_carries_the_users_own_index_or_view(run_cli, tmp_path):
    path = _v1_copy(tmp_path)
    alter(path, "CREATE INDEX my_titles ON incidents (title)",
          "CREATE VIEW open_incidents AS SELECT id FROM Incidents WHERE status = 'open'",
          "CREATE INDEX my_run_agents ON runs (agent_id)")  # runs is not rebuilt: it may stay
    before = dump(path)
    result = run_cli(path, "migrate", "--backup", str(tmp_path / "b.db"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "would lose what was added to them: index my_titles, view open_incidents; drop those, " \
           "migrate, then create them again (nothing changed)" in result.stderr
    assert dump(path) == before
    alter(path, "DROP INDEX my_titles", "DROP VIEW open_incidents")
    assert run_cli(path, "migrate", "--backup", str(tmp_path / "b2.db")).exit_code == 0
    assert _user_version(path) == SCHEMA_VERSION
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'my_run_agents'").fetchone()
    conn.close()


def test_backup_refuses_an_existing_file(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    run_cli(path, "init")
    (tmp_path / "taken.db").write_text("keep me")
    result = run_cli(path, "backup", str(tmp_path / "taken.db"))
    assert result.exit_code == 2 and "cannot write backup" in result.stderr
    assert (tmp_path / "taken.db").read_text() == "keep me"


def _write_in_a_loop(path, name, started, stop):
    """A writer process: coordinator transactions (one cost record each) until `stop` or the bound."""
    from hoc_drivers.db import connect_database
    from hoc_drivers.models.cost import CostRecord
    from hoc_drivers.transaction_coordinator import TransactionCoordinator

    db = connect_database(path, create=False)
    coordinator = TransactionCoordinator(db)
    for i in range(WRITES_PER_WRITER):
        with coordinator.transaction():
            CostRecord.insert(tenant_id=name, model="m", cost_cents=float(i)).execute(db)
        started.set()
        if stop.is_set():
            break
    db.close()


def test_a_backup_taken_while_four_processes_write_is_consistent(run_cli, tmp_path):
    path = tmp_path / "hoc.db"
    assert run_cli(path, "init").exit_code == 0
    context = multiprocessing.get_context("fork")
    stop = context.Event()
    started = [context.Event() for _ in range(WRITERS)]
    writers = [context.Process(target=_write_in_a_loop, args=(str(path), f"w{n}", started[n], stop))
               for n in range(WRITERS)]
    for writer in writers:
        writer.start()
    try:
        assert all(event.wait(60) for event in started), "a writer never committed"
        result = run_cli(path, "backup", str(tmp_path / "copy.db"))
    finally:
        stop.set()
        for writer in writers:
            writer.join(60)
    assert result.exit_code == 0, result.stderr
    assert [w.exitcode for w in writers] == [0] * WRITERS
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    copied = copy.execute("SELECT count(*) FROM cost_records").fetchone()[0]
    copy.close()
    total = sqlite3.connect(path).execute("SELECT count(*) FROM cost_records").fetchone()[0]
    assert WRITERS <= copied <= total
