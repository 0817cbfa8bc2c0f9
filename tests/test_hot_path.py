"""The write hot path: few Python calls per transaction, one timestamp per transaction, and the
guard's and Peewee's guarantees kept on the direct route prepared statements take."""
import cProfile
import gc
import logging
import math
import sqlite3
import uuid
import weakref
import pstats
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum

import peewee
import pytest
from freezegun import freeze_time

from hoc_drivers.commit_guard import CommitForbidden
from hoc_drivers.facts import GuardStateChanged, tenant_changed
from hoc_drivers.models.base import PLACEHOLDER, PreparedInsert, PreparedQuery, UtcDateTimeField
from hoc_drivers.models.runs import Event, Incident, PreventionRecord, Run, Trace
from hoc_drivers.run_completion import RunCompletionTransaction, complete_trace
from hoc_drivers.validation import require_json_value
from hoc_drivers.verdicts import db_time


def _complete(coordinator, run_id):
    return RunCompletionTransaction(coordinator).execute("t1", run_id, "failed", error_message="AGENT_CRASH",
                                                         trace_id=f"trace-{run_id}")


@pytest.mark.sqlite_only
def test_a_run_completion_costs_few_python_calls(hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        Trace.insert_many([{"trace_id": f"trace-r{i}", "tenant_id": "t1", "run_id": f"r{i}"}
                           for i in range(25)]).execute(tx.db)
    for i in range(5):  # statements built, caches warm
        _complete(hoc_coordinator, f"r{i}")
    profile = cProfile.Profile()
    profile.enable()
    for i in range(5, 25):
        _complete(hoc_coordinator, f"r{i}")
    profile.disable()
    calls = pstats.Stats(profile).total_calls / 20
    assert calls < 185, (f"{calls:.0f} Python calls per run completion (591 before issue 17, 231 after round 2, "
                         "about 200 before its statements ran through one statement_runner)")


def test_every_row_of_a_transaction_carries_its_one_timestamp(hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        Trace.insert(trace_id="trace-r1", tenant_id="t1", run_id="r1").execute(tx.db)
    with freeze_time("2026-03-01 12:00:00", tick=True):
        result = _complete(hoc_coordinator, "r1")
    incident = Incident.select().where(Incident.source_run_id == "r1").get(hoc_db)
    stamps = {incident.created_at, incident.updated_at, incident.started_at,
              PreventionRecord.select().where(PreventionRecord.run_id == "r1").get(hoc_db).created_at,
              Trace.select().where(Trace.trace_id == "trace-r1").get(hoc_db).completed_at,
              result.incident_result.timestamp, result.policy_result.timestamp,
              result.trace_result.timestamp}
    stamps |= {event.created_at for event in Event.select().execute(hoc_db)}
    assert len(stamps) == 1


def test_a_prepared_statement_still_meets_the_guard(hoc_coordinator, hoc_db):
    insert = PreparedInsert(Trace, ("trace_id", "tenant_id", "run_id"))
    with pytest.raises(CommitForbidden):
        insert.execute(hoc_db, {"trace_id": "x", "tenant_id": "t1", "run_id": "r"})
    with hoc_coordinator.transaction() as tx:
        insert.execute(tx.db, {"trace_id": "x", "tenant_id": "t1", "run_id": "r"})
        conn = hoc_db.connection()
        with pytest.raises(CommitForbidden):  # control is never sent on the direct route
            conn.execute_built('SAVEPOINT "sneaky"', ())
        with pytest.raises(CommitForbidden):
            conn.issue("COMMIT")
        with pytest.raises(peewee.IntegrityError), tx.statement_savepoint():  # errors become Peewee's
            insert.execute(tx.db, {"trace_id": "x", "tenant_id": "t1", "run_id": "r"})
        with tx.savepoint():  # savepoints still nest around the direct route
            insert.execute(tx.db, {"trace_id": "y", "tenant_id": "t1", "run_id": "r"})
    with pytest.raises(CommitForbidden):  # the transaction has ended: the cached write is refused
        insert.execute(hoc_db, {"trace_id": "z", "tenant_id": "t1", "run_id": "r"})
    assert [t.trace_id for t in Trace.select().order_by(Trace.trace_id).execute(hoc_db)] == ["x", "y"]


def test_a_prepared_statement_logs_its_sql_whenever_peewee_logs_debug(hoc_coordinator, hoc_db, caplog):
    """The hot path reads the logger's remembered answer: a level changed after it answered
    "not logged" is seen at the next statement, both ways."""
    insert = PreparedInsert(Trace, ("trace_id", "tenant_id", "run_id"))
    logger = logging.getLogger("peewee")

    def logged_sql(trace_id, level):
        caplog.clear()
        with hoc_coordinator.transaction() as tx:
            logger.setLevel(level)  # right before the statements: nothing has asked the logger since
            insert.execute(tx.db, (f"{trace_id}1", "t1", "r"))  # the logger is asked
            insert.execute(tx.db, (f"{trace_id}2", "t1", "r"))  # its answer is remembered
        return [r for r in caplog.records if r.name == "peewee" and "INSERT" in str(r.msg)]

    with caplog.at_level(logging.DEBUG, logger="peewee"):
        assert logged_sql("a", logging.WARNING) == [] and logger.isEnabledFor(logging.DEBUG) is False
        assert len(logged_sql("b", logging.DEBUG)) == 2
        assert logged_sql("c", logging.WARNING) == []
        assert len(logged_sql("d", logging.DEBUG)) == 2
    assert Trace.select().count(hoc_db) == 8


def test_a_run_completion_logs_each_of_its_statements_whenever_peewee_logs_debug(hoc_coordinator, hoc_db, caplog):
    """Run completion picks how to run its statements once per transaction (`statement_runner`):
    with Peewee's logger at DEBUG every one of them still goes through Peewee and is logged."""
    with hoc_coordinator.transaction() as tx:
        Trace.insert_many([{"trace_id": f"trace-r{i}", "tenant_id": "t1", "run_id": f"r{i}"}
                           for i in range(2)]).execute(tx.db)
    logger = logging.getLogger("peewee")
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        _complete(hoc_coordinator, "r0")
        logged = " ".join(str(r.msg) for r in caplog.records if r.name == "peewee")
        assert all(table in logged for table in ('"prevention_records"', '"incidents"', '"runs"', '"aos_traces"'))
        caplog.clear()
        logger.setLevel(logging.WARNING)
        _complete(hoc_coordinator, "r1")
        assert [r for r in caplog.records if r.name == "peewee"] == []
    assert Trace.select().where(Trace.completed_at.is_null(False)).count(hoc_db) == 2


class Colour(str, Enum):
    RED = "red"


def test_values_bind_as_peewee_would_convert_them():
    insert = PreparedInsert(Incident, ("id", "tenant_id", "title", "severity", "status", "trigger_type",
                                       "calls_affected", "is_synthetic", "cost_delta_cents", "started_at"))
    now = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    row = {"id": "i1", "tenant_id": "t1", "title": Colour.RED, "severity": 5, "status": "open",
           "trigger_type": b"manual", "calls_affected": True, "is_synthetic": 1, "cost_delta_cents": 7,
           "started_at": now}
    fields = Incident._meta.fields
    expected = [None if row.get(name) is None else fields[name].db_value(row[name]) for name in insert.names
                if name in row]
    bound = dict(zip(insert.names, insert.values(row), strict=True))
    assert [bound[name] for name in insert.names if name in row] == expected
    assert bound["started_at"] == "2026-03-01 12:00:00.000000"


def test_timestamps_convert_right_one_after_another():
    field = UtcDateTimeField()
    first = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    later = first + timedelta(microseconds=1)
    assert [field.db_value(v) for v in (first, first, later, first.isoformat(), None, later)] == [
        "2026-03-01 12:00:00.000000", "2026-03-01 12:00:00.000000", "2026-03-01 12:00:00.000001",
        "2026-03-01 12:00:00.000000", None, "2026-03-01 12:00:00.000001"]



def test_outbox_ids_sort_by_time_so_the_outbox_grows_at_its_end(hoc_coordinator, hoc_db):
    with freeze_time("2026-03-01 12:00:00") as frozen:
        ids = []
        for _ in range(3):
            with hoc_coordinator.transaction() as tx:
                ids.append(tx.publish("t", {}))
            frozen.tick(timedelta(milliseconds=2))  # 2: freezegun's float clock ticks 1 ms as 999,936 ns
    assert ids == sorted(ids) and all(len(i) == 32 and int(i, 16) for i in ids)
    assert {uuid.UUID(i).version for i in ids} == {7}
    assert int(ids[0][:12], 16) == int(datetime(2026, 3, 1, 12, tzinfo=timezone.utc).timestamp() * 1000)
    assert [e.id for e in Event.select().order_by(Event.id).execute(hoc_db)] == ids


def test_run_completion_ids_sort_by_time_so_their_indexes_grow_at_the_end(hoc_coordinator, hoc_db):
    with freeze_time("2026-03-01 12:00:00") as frozen:
        for run_id in ("r-b", "r-a", "r-c"):  # not in the order of the run ids
            _complete(hoc_coordinator, run_id)
            frozen.tick(timedelta(milliseconds=2))
    for model in (Incident, PreventionRecord):
        rows = list(model.select(model.id, model.created_at).order_by(model.id).execute(hoc_db))
        assert [row.created_at for row in rows] == sorted(row.created_at for row in rows)
        assert len(rows) == 3 and {uuid.UUID(row.id).version for row in rows} == {7}


@pytest.mark.sqlite_only  # SQLite's statement cache, its authorizer and a bare sqlite3 cursor
def test_begin_and_commit_come_from_the_statement_cache_and_a_bare_cursor_cannot_commit(hoc_coordinator, hoc_db):
    conn = hoc_db.connection()
    actions = []
    guard = conn._authorize
    conn.set_authorizer(lambda *args: actions.append(args[0]) or guard(*args))  # expires the cache
    try:
        for _ in range(2):  # the first one prepares BEGIN IMMEDIATE and COMMIT again
            with hoc_coordinator.transaction():
                pass
        actions.clear()
        for _ in range(3):
            with hoc_coordinator.transaction():
                pass
        assert sqlite3.SQLITE_TRANSACTION not in actions  # SQLite prepared neither again
        with hoc_coordinator.transaction() as tx:
            Trace.insert(trace_id="x", tenant_id="t1", run_id="r").execute(tx.db)
            with pytest.raises(sqlite3.DatabaseError):  # plain "COMMIT" is not the cached text
                sqlite3.Cursor(conn).execute("COMMIT")
            assert conn.in_transaction and Trace.select().count(hoc_db) == 1
            other = sqlite3.connect(hoc_db.database)
            assert other.execute("SELECT count(*) FROM aos_traces").fetchone() == (0,)  # not committed
            other.close()
    finally:
        conn.set_authorizer(guard)
    assert Trace.select().count(hoc_db) == 1


def test_a_subclass_of_a_native_type_binds_as_its_plain_value():
    insert = PreparedInsert(Incident, ("id", "tenant_id", "title", "severity", "trigger_type",
                                       "calls_affected", "is_synthetic", "cost_impact"))
    bound = dict(zip(insert.names, insert.values(
        {"id": "i1", "tenant_id": "t1", "title": Colour.RED, "severity": "low", "trigger_type": "x",
         "calls_affected": True, "is_synthetic": True, "cost_impact": Decimal("1.50")}), strict=True))
    assert bound["cost_impact"] == "1.50" and bound["cost_delta_cents"] == "0"  # its default, as text
    assert bound["title"] == "red" and type(bound["title"]) is str  # sqlite3 looks up no adapter
    assert bound["calls_affected"] == 1 and type(bound["calls_affected"]) is int
    assert bound["is_synthetic"] is True


def test_rows_of_different_shapes_get_their_own_defaults_and_conversions():
    insert = PreparedInsert(Run, ("id", "tenant_id", "status", "updated_at"), rows=2)
    later = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    with freeze_time("2026-03-01 11:00:00") as frozen:
        first = insert.values({"id": "a", "tenant_id": "t"}, {"id": "b", "tenant_id": "t", "status": "done",
                                                              "updated_at": later})
        frozen.tick(timedelta(hours=2))
        again = insert.values({"id": "a", "tenant_id": "t"}, {"id": "b", "tenant_id": "t", "status": None,
                                                              "updated_at": later.isoformat()})
    rows = [dict(zip(insert.names, params[i * len(insert.names):(i + 1) * len(insert.names)], strict=True))
            for params in (first, again) for i in range(2)]
    assert [r["status"] for r in rows] == ["queued", "done", "queued", None]
    assert [r["incident_count"] for r in rows] == [0, 0, 0, 0]
    assert [r["created_at"] for r in rows] == ["2026-03-01 11:00:00.000000"] * 2 + ["2026-03-01 13:00:00.000000"] * 2
    assert [r["updated_at"] for r in rows] == ["2026-03-01 11:00:00.000000", "2026-03-01 12:00:00.000000",
                                               "2026-03-01 13:00:00.000000", "2026-03-01 12:00:00.000000"]



def test_a_tuple_row_binds_as_given_with_the_defaults_it_leaves_out():
    insert = PreparedInsert(Run, ("tenant_id", "id", "updated_at"), rows=2)
    with freeze_time("2026-03-01 11:00:00"):
        params = insert.values(("t", "a", "2026-03-01 10:00:00.000000"), ("t", "b", None))
    rows = [dict(zip(insert.names, params[i * len(insert.names):(i + 1) * len(insert.names)], strict=True))
            for i in range(2)]
    assert [(r["id"], r["tenant_id"], r["status"], r["incident_count"]) for r in rows] == [
        ("a", "t", "queued", 0), ("b", "t", "queued", 0)]
    assert [r["created_at"] for r in rows] == ["2026-03-01 11:00:00.000000"] * 2  # made per row
    assert [r["updated_at"] for r in rows] == ["2026-03-01 10:00:00.000000", None]  # as given


def test_a_tuple_row_binds_what_the_same_dict_row_binds():
    insert = PreparedInsert(Incident, ("id", "tenant_id", "title", "severity", "status", "trigger_type",
                                       "cost_delta_cents", "started_at", "is_synthetic"))
    now = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
    as_dict = {"id": "i1", "tenant_id": "t1", "title": "x", "severity": "low", "status": "open",
               "trigger_type": "manual", "cost_delta_cents": Decimal("7"), "started_at": now, "is_synthetic": True}
    as_tuple = ("i1", "t1", "x", "low", "open", "manual", "7", "2026-03-01 12:00:00.000000", True)
    with freeze_time("2026-03-01 13:00:00"):  # created_at and updated_at: their defaults, made per row
        assert insert.values(as_tuple) == insert.values(as_dict)


def test_an_insert_naming_a_field_twice_is_refused_when_made():
    with pytest.raises(ValueError, match="a field is named twice in trace_id, tenant_id, trace_id"):
        PreparedInsert(Trace, ("trace_id", "tenant_id", "trace_id"))


def test_a_tuple_row_of_the_wrong_length_or_with_nul_is_refused():
    insert = PreparedInsert(Trace, ("trace_id", "tenant_id", "run_id"))
    with pytest.raises(ValueError, match=r"gives the 3 values of trace_id, tenant_id, run_id; got 2"):
        insert.values(("tr1", "t1"))
    with pytest.raises(ValueError, match="run_id must not contain a NUL"):
        insert.values(("tr1", "t1", "r\x00"))
    assert PreparedInsert(Trace, ("trace_id",)).values(("tr1",))[0] == "tr1"  # one given value
    with pytest.raises(ValueError, match="trace_id must not contain a NUL"):
        PreparedInsert(Trace, ("trace_id",)).values(("\x00",))


def test_a_validated_tuple_row_binds_what_a_checked_one_binds_without_looking_at_its_text():
    insert = PreparedInsert(Trace, ("trace_id", "tenant_id", "run_id"))
    row = ("tr1", "t1", "r1")
    with freeze_time("2026-03-01 12:00:00"):  # the defaults made per row are the same
        assert insert._tuple_plan.bind(row, text_checked=True) == insert._tuple_plan.bind(row)
    assert insert._tuple_plan.bind(("tr1", "t1", "r\x00"), text_checked=True)[2] == "r\x00"  # the writer's word
    with pytest.raises(ValueError, match="gives the 3 values"):
        insert._tuple_plan.bind(("tr1", "t1"), text_checked=True)  # the length is always checked


def _nested(depth):
    value = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize("value", [_nested(33), _nested(5000), [_nested(40), math.nan]])
def test_json_too_deep_is_the_error_whatever_the_encoder_says(value):
    with pytest.raises(ValueError, match="nested too deeply"):
        require_json_value(value, "x")


def test_short_json_needs_no_depth_walk_and_is_still_checked():
    assert require_json_value(_nested(32), "x") == _nested(32)
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        require_json_value({"x": math.nan}, "x")


def test_validated_rows_that_bind_as_given_are_bound_whole_and_each_row_is_still_measured(hoc_coordinator, hoc_db):
    insert = PreparedInsert(Event, ("id", "tenant_id", "topic", "payload", "created_at"), rows=2)
    assert insert._tuple_plan.as_given  # the rows are the parameters, in column order
    stamp = "2026-03-01 12:00:00.000000"
    with hoc_coordinator.transaction() as tx:
        insert.execute_validated(tx.db, ("e1", "t1", "a", "{}", stamp), ("e2", "t1", "b", "[]", stamp))
    assert [(e.id, e.topic, e.payload) for e in Event.select().order_by(Event.id).execute(hoc_db)] == [
        ("e1", "a", {}), ("e2", "b", [])]
    with pytest.raises(ValueError, match="gives the 5 values"):  # as many values in all, not per row
        with hoc_coordinator.transaction() as tx:
            insert.execute_validated(tx.db, ("e3", "t1", "c", "{}", stamp, "extra"), ("e4", "t1", "d", "{}"))
    assert Event.select().count(hoc_db) == 2


def test_a_tenant_fact_is_made_once_and_is_the_fact_a_writer_would_make():
    fact = tenant_changed("t1")
    assert fact is tenant_changed("t1") and fact == GuardStateChanged("t1")
    assert tenant_changed("t2") != fact and tenant_changed("t2").tenant_id == "t2"


def test_a_transactions_stored_time_is_its_time_in_utc_whatever_zone_it_came_in(hoc_coordinator):
    india = timezone(timedelta(hours=5, minutes=30))
    assert db_time(datetime(2026, 3, 1, 17, 30, 0, 5, tzinfo=india)) == "2026-03-01 12:00:00.000005"
    assert db_time(datetime(2026, 3, 1, 12, 0)) == "2026-03-01 12:00:00.000000"  # naive: already UTC
    with freeze_time("2026-03-01 12:00:00.25"), hoc_coordinator.transaction() as tx:
        assert tx.now_text == db_time(tx.now) == "2026-03-01 12:00:00.250000"


def test_a_trace_completed_at_another_time_than_its_transactions_stores_that_time(hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        Trace.insert(trace_id="trace-r1", tenant_id="t1", run_id="r1").execute(tx.db)
    with hoc_coordinator.transaction() as tx:
        later = tx.now + timedelta(minutes=5)
        assert complete_trace(tx, "t1", "trace-r1", "failed", None, later)
    stored = Trace.select().where(Trace.trace_id == "trace-r1").get(hoc_db).completed_at
    assert stored == later and stored != tx.now


@pytest.mark.sqlite_only
def test_a_long_lived_connection_does_not_keep_a_reference_per_statement(hoc_coordinator, hoc_db):
    """sqlite3 keeps a weak reference to each cursor of a connection and drops the dead ones only
    when a cursor is made through the connection: the guard's cursors must be made that way."""
    def weak_references():
        return sum(type(o) is weakref.ReferenceType for o in gc.get_objects())

    with hoc_coordinator.transaction() as tx:
        Trace.insert_many([{"trace_id": f"trace-r{i}", "tenant_id": "t1", "run_id": f"r{i}"}
                           for i in range(600)]).execute(tx.db)
    for i in range(100):
        _complete(hoc_coordinator, f"r{i}")
    gc.collect()
    before = weak_references()
    for i in range(100, 600):  # 500 completions, 8 statements each
        _complete(hoc_coordinator, f"r{i}")
    gc.collect()
    assert weak_references() - before < 300  # sqlite3 drops the dead ones every 200 cursors


def test_an_update_refuses_nul_in_the_text_of_a_str_enum_whatever_its_str_says(hoc_coordinator, hoc_db):
    class Status(str, Enum):
        HIDDEN = "fail\x00ed"  # str() of it is "Status.HIDDEN", which holds no NUL

    with hoc_coordinator.transaction() as tx:
        Trace.insert(trace_id="trace-r1", tenant_id="t1", run_id="r1").execute(tx.db)
    with pytest.raises(ValueError, match="NUL"), hoc_coordinator.transaction() as tx:
        complete_trace(tx, "t1", "trace-r1", Status.HIDDEN, None, tx.now)
    assert Trace.select().where(Trace.trace_id == "trace-r1").get(hoc_db).completed_at is None


def test_an_update_refuses_nul_in_text_whose_own_in_operator_hides_it(hoc_coordinator, hoc_db):
    class Hiding(str):
        def __contains__(self, part):
            return False  # the text is what is stored, whatever `in` says

    with hoc_coordinator.transaction() as tx:
        Trace.insert(trace_id="trace-r1", tenant_id="t1", run_id="r1").execute(tx.db)
    with pytest.raises(ValueError, match="NUL"), hoc_coordinator.transaction() as tx:
        complete_trace(tx, "t1", "trace-r1", Hiding("fail\x00ed"), None, tx.now)
    assert Trace.select().where(Trace.trace_id == "trace-r1").get(hoc_db).status != "fail\x00ed"


def test_one_validated_row_gets_the_left_out_defaults_and_a_wrong_length_is_still_refused(hoc_coordinator, hoc_db):
    stamp = "2026-03-01 12:00:00.000000"
    constants_only = PreparedInsert(Run, ("id", "tenant_id", "status", "created_at", "updated_at"))
    made_per_row = PreparedInsert(Run, ("id", "tenant_id", "status"))  # created_at, updated_at: made
    assert constants_only._tuple_plan.constants == (0,) and not constants_only._tuple_plan.makers
    assert made_per_row._tuple_plan.makers
    with hoc_coordinator.transaction() as tx:
        constants_only.execute_validated(tx.db, ("r1", "t1", "running", stamp, stamp))
        made_per_row.execute_validated(tx.db, ("r2", "t1", "running"))
    rows = {r.id: r for r in Run.select().execute(hoc_db)}
    assert (rows["r1"].incident_count, rows["r2"].incident_count) == (0, 0)
    assert rows["r1"].created_at.year == 2026 and rows["r2"].created_at is not None
    for row in (("r3", "t1", "running", stamp), ("r3", "t1", "running", stamp, stamp, "extra")):
        with pytest.raises(ValueError, match="gives the 5 values"):
            with hoc_coordinator.transaction() as tx:
                constants_only.execute_validated(tx.db, row)
    assert Run.select().count(hoc_db) == 2


def test_a_statement_with_values_of_its_own_takes_the_callers_in_their_places_and_refuses_a_wrong_count(
        hoc_coordinator, hoc_db):
    # Peewee binds 5 and "queued" itself: the caller's three values go around them, in order
    bump = PreparedQuery(lambda: Run.update(incident_count=Run.incident_count + 5).where(
        (Run.id == PLACEHOLDER) & (Run.status == "queued") & (Run.tenant_id == PLACEHOLDER)))
    with hoc_coordinator.transaction() as tx:
        Run.insert_many([{"id": "r1", "tenant_id": "t1"}, {"id": "r2", "tenant_id": "t2"}]).execute(tx.db)
        assert bump.execute(tx.db, ("r1", "t1")).rowcount == 1
        assert bump.execute(tx.db, ("r2", "t1")).rowcount == 0  # r2 is t2's
    for values in (("r1",), ("r1", "t1", "extra")):
        with pytest.raises(ValueError, match=f"takes 2 values, got {len(values)}"):
            with hoc_coordinator.transaction() as tx:
                bump.execute_validated(tx.db, values)
    assert {r.id: r.incident_count for r in Run.select().execute(hoc_db)} == {"r1": 5, "r2": 0}


def test_a_prepared_statement_runs_on_a_plain_peewee_database_too():
    plain = peewee.SqliteDatabase(":memory:")  # no guard, no execute_built on its connection
    with plain.bind_ctx([Run]):
        plain.create_tables([Run])
        Run.insert(id="r1", tenant_id="t1").execute()
        select = PreparedQuery(lambda: Run.select(Run.id).where(Run.tenant_id == PLACEHOLDER))
        assert select.execute(plain, ("t1",)).fetchall() == [("r1",)]
    plain.close()
