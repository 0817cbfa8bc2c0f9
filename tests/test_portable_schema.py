"""The schema on both backends: insertion order by a real column (`seq`), the worker-run
immutability trigger, schema parity against PostgreSQL's catalog, text holding NUL refused."""
from datetime import datetime, timezone

import pytest
from peewee import IntegrityError

from hoc_drivers import dialect, settings
from hoc_drivers.guard_write_driver import GuardReader
from hoc_drivers.listing import page
from hoc_drivers.models import ALL_MODELS
from hoc_drivers.models.base import PLACEHOLDER, PreparedInsert, PreparedQuery
from hoc_drivers.models.cost import WorkerRun
from hoc_drivers.models.runs import Incident, IncidentEvent
from hoc_drivers.schema_parity import compare_schema
from hoc_drivers.testing import content_snapshot

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
ORDERED_TABLES = {"incidents", "incident_events", "killswitch_state", "killswitch_events", "governance_signals",
                  "discovery_ledger", "decision_records", "costsim_alert_queue", "notifications",
                  "threshold_signals"}
postgresql_only = pytest.mark.skipif(settings.get("testing.backend") != "postgresql",
                                     reason="about PostgreSQL's catalog (HOC_TEST_BACKEND=postgresql)")


def _incident(incident_id):
    return {"id": incident_id, "tenant_id": "t", "title": "x", "severity": "HIGH", "trigger_type": "manual",
            "created_at": T0}


def test_every_table_listed_in_insertion_order_is_keyed_by_seq():
    keyed = {m._meta.table_name for m in ALL_MODELS if "seq" in m._meta.columns}
    assert keyed == ORDERED_TABLES


def test_ties_list_in_insertion_order_even_after_an_update(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction() as tx:  # ids sort against insertion order; one timestamp
        Incident.insert_many([_incident(i) for i in ("c", "b", "a")]).execute(tx.db)
        IncidentEvent.insert_many([{"id": e, "incident": "c", "tenant_id": "t", "event_type": "note",
                                    "description": e, "created_at": T0} for e in ("z", "y", "x")]).execute(tx.db)
    with hoc_coordinator.transaction() as tx:  # PostgreSQL writes an updated row anew (ctid changes)
        Incident.update(title="changed").where(Incident.id == "c").execute(tx.db)
        IncidentEvent.update(description="changed").where(IncidentEvent.id == "z").execute(tx.db)

    def ids(newest_first):
        return [i.id for i in page(Incident.select(), Incident.created_at, newest_first=newest_first).execute(hoc_db)]

    assert ids(newest_first=False) == ["c", "b", "a"]
    assert ids(newest_first=True) == ["a", "b", "c"]
    assert [e.id for e in GuardReader(hoc_db).list_incident_events("t", "c")] == ["z", "y", "x"]


@pytest.mark.sqlite_only
def test_on_sqlite_seq_is_the_rowid_and_the_text_id_keeps_its_one_unique_index(hoc_db):
    for table in ORDERED_TABLES:
        assert hoc_db.execute_sql(f'SELECT count(*) FROM "{table}" WHERE seq IS NOT rowid').fetchone() == (0,)
    indexes = hoc_db.execute_sql("PRAGMA index_list(incidents)").fetchall()
    assert [(name, unique) for _, name, unique, origin, _ in indexes if origin == "u"] == [
        ("sqlite_autoindex_incidents_1", 1)]  # the UNIQUE id; seq (the rowid) needs no index


def test_the_worker_run_immutability_trigger_refuses_a_raw_update(hoc_db, hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        WorkerRun.insert(id="r1", tenant_id="t", worker_id="w", task="x", status="completed",
                         total_tokens=10).execute(tx.db)
    assert "worker_runs_immutable_guard" in dict(
        hoc_db.execute_sql(dialect.triggers_sql(hoc_db), ("worker_runs",)).fetchall())
    with pytest.raises(IntegrityError, match="TRUTH_VIOLATION"):
        with hoc_coordinator.transaction() as tx:
            tx.db.execute_sql("UPDATE worker_runs SET total_tokens = 11 WHERE id = 'r1'")
    assert WorkerRun.select(WorkerRun.total_tokens).where(WorkerRun.id == "r1").scalar(hoc_db) == 10


@postgresql_only
def test_schema_parity_reports_a_drifted_postgresql_column(hoc_db, hoc_coordinator):
    assert compare_schema(hoc_db) == []
    with hoc_coordinator.transaction() as tx:
        tx.db.execute_sql("ALTER TABLE notifications ALTER COLUMN title TYPE text")
        tx.db.execute_sql("ALTER TABLE notifications ALTER COLUMN read_at SET NOT NULL")
        tx.db.execute_sql("ALTER TABLE cost_records ALTER COLUMN input_tokens SET DEFAULT 7")
        tx.db.execute_sql("ALTER TABLE cost_records ALTER COLUMN created_at DROP DEFAULT")
    found = {str(issue) for issue in compare_schema(hoc_db)}
    assert found == {
        "COLUMN_TYPE notifications: column title is TEXT, expected CHARACTER VARYING",
        "COLUMN_NULL notifications: column read_at should be NULL",
        "COLUMN_DEFAULT cost_records: column input_tokens has default 7, expected 0",
        "COLUMN_DEFAULT cost_records: column created_at has default None, expected now() at time zone 'utc'"}


_INSERT_INCIDENT = PreparedInsert(Incident, ["id", "tenant_id", "title", "severity", "trigger_type"])
_SET_TITLE = PreparedQuery(lambda: Incident.update(title=PLACEHOLDER).where(Incident.id == PLACEHOLDER))


@pytest.mark.parametrize("write, field", [
    (lambda db: _INSERT_INCIDENT.execute(db, {**_incident("i1"), "title": "a\x00b"}), "title"),
    (lambda db: Incident.insert(_incident("i\x00")).execute(db), "id"),
    (lambda db: Incident.update(description="\x00").execute(db), "description"),
    (lambda db: _SET_TITLE.execute(db, ["\x00", "i1"]), "text written to incidents"),
])
def test_text_holding_nul_is_refused_before_it_is_sent(hoc_db, hoc_coordinator, write, field):
    before = content_snapshot(hoc_db)
    with pytest.raises(ValueError, match=rf"^{field} must not contain a NUL character \(\\x00\)$"):
        with hoc_coordinator.transaction() as tx:
            write(tx.db)
    assert content_snapshot(hoc_db) == before


def test_migrate_and_backup_say_plainly_they_work_on_sqlite_files(hoc_db, run_cli, tmp_path):
    if dialect.of(hoc_db) != dialect.POSTGRESQL:
        pytest.skip("about a PostgreSQL database")
    before = content_snapshot(hoc_db)
    migrate = run_cli(hoc_db.database, "migrate")
    assert migrate.exit_code == 1 and migrate.stderr.startswith("error: migrate upgrades SQLite files")
    backup = run_cli(hoc_db.database, "backup", str(tmp_path / "copy.db"))
    assert backup.exit_code == 1 and "back a PostgreSQL database up with pg_dump" in backup.stderr
    assert "Traceback" not in migrate.output + backup.output
    assert not (tmp_path / "copy.db").exists() and content_snapshot(hoc_db) == before
