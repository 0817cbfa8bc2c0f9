"""The alert queue's edges: what an alert object says after each change, tenant scope under every
filter, the errors an operator reads, defaults, due times and the purge's order (issue 18)."""
import re
import threading
from datetime import datetime, timedelta, timezone

import pytest

from hoc_drivers import dialect
from hoc_drivers.alert_driver import ALL_TENANTS, AlertBusy, AlertDriver, AlertQueueReader
from hoc_drivers.facts import AlertQueued
from hoc_drivers.models.alerts import AlertQueueItem
from hoc_drivers.models.runs import Incident
from hoc_drivers.testing import other_connection

from tests.test_concurrency import _wait_until_a_statement_waits_for_a_lock

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
FIELDS = [f.name for f in AlertQueueItem._meta.sorted_fields if f.name != "seq"]  # seq: the database's order


def at(seconds):
    return T0 + timedelta(seconds=seconds)


def set_row(queue, alert, **changes):
    """Give `alert`'s row the state a sender's earlier work would have left."""
    queue(lambda d: AlertQueueItem.update(changes).where(AlertQueueItem.id == alert.id).execute(d.db))


def assert_mirrors_its_row(alert, db):
    """The alert object a writer returned or changed says what the database now holds."""
    row = AlertQueueItem.select().where(AlertQueueItem.id == alert.id).get(db)
    assert {name: getattr(alert, name) for name in FIELDS} == {name: getattr(row, name) for name in FIELDS}


def test_an_alert_object_says_what_its_row_holds_after_each_change(queue, hoc_db):
    alert = queue(lambda d: d.insert_alert("acme", [{"n": 1}], "test", channel="webhook",
                                           destination={"url": "https://hooks.acme.test/a"},
                                           max_attempts=3, now=T0))
    assert_mirrors_its_row(alert, hoc_db)
    (claimed,) = queue(lambda d: d.fetch_pending_alerts(T0))
    assert queue(lambda d: d.update_alert_retry(claimed, at(1), at(10), "HTTP 503"))
    assert_mirrors_its_row(claimed, hoc_db)
    (claimed,) = queue(lambda d: d.fetch_pending_alerts(at(10)))
    assert queue(lambda d: d.update_alert_retry(claimed, at(11), at(20), ""))  # keeps "HTTP 503"
    assert_mirrors_its_row(claimed, hoc_db)
    (claimed,) = queue(lambda d: d.fetch_pending_alerts(at(20)))
    assert queue(lambda d: d.update_alert_failed(claimed, at(21), "HTTP 404"))
    assert_mirrors_its_row(claimed, hoc_db)
    assert (claimed.status, claimed.attempts, claimed.last_error, claimed.claim_token) == \
        ("failed", 3, "HTTP 404", None)
    revived = queue(lambda d: d.retry_alert("acme", alert.id, at(30)))
    assert_mirrors_its_row(revived, hoc_db)
    (claimed,) = queue(lambda d: d.fetch_pending_alerts(at(30)))
    assert queue(lambda d: d.update_alert_failed(claimed, at(31), None))  # keeps "HTTP 404"
    assert_mirrors_its_row(claimed, hoc_db)
    queue(lambda d: d.retry_alert("acme", alert.id, at(40)))
    (claimed,) = queue(lambda d: d.fetch_pending_alerts(at(40)))
    assert queue(lambda d: d.update_alert_sent(claimed, at(41)))
    assert_mirrors_its_row(claimed, hoc_db)
    assert (claimed.status, claimed.sent_at, claimed.attempts, claimed.last_error) == \
        ("sent", at(41), 4, "HTTP 404")


def test_operator_reads_keep_the_tenant_under_every_filter(queue, hoc_db):
    mine = queue(lambda d: d.insert_alert("acme", {}, "t", channel="webhook",
                                          destination={"url": "https://hooks.example/acme"}, now=T0))
    later = queue(lambda d: d.insert_alert("acme", {}, "t", now=at(20)))
    theirs = queue(lambda d: d.insert_alert("globex", {}, "t", channel="webhook",
                                            destination={"url": "https://hooks.example/globex"}, now=at(5)))
    reader = AlertQueueReader(hoc_db)
    assert [a.id for a in reader.list_alerts("acme", channel="webhook")] == [mine.id]
    assert [a.id for a in reader.list_alerts("acme", destination="hooks.example")] == [mine.id]
    assert [a.id for a in reader.list_alerts("acme", until=at(20))] == [mine.id]  # created before
    assert [a.id for a in reader.list_alerts("acme", since=at(20))] == [later.id]
    assert reader.full_alert_id("acme", mine.id[:12]) == mine.id
    assert reader.full_alert_id("acme", theirs.id[:12]) is None
    assert reader.full_alert_id(ALL_TENANTS, theirs.id[:12]) == theirs.id


def test_argument_errors_name_the_argument(queue, hoc_db):
    reader = AlertQueueReader(hoc_db)
    channels = re.escape("(expected one of: alertmanager, webhook, slack, email)")
    with pytest.raises(ValueError, match=r"^unknown alert channel 'sms' " + channels):
        reader.list_alerts(ALL_TENANTS, channel="sms")
    with pytest.raises(ValueError, match=r"^unknown alert channel 'sms' " + channels):
        queue(lambda d: d.insert_alert(None, {}, "t", channel="sms"))
    statuses = re.escape("(expected one of: pending, sent, failed)")
    with pytest.raises(ValueError, match=r"^unknown alert status 'x' " + statuses):
        reader.list_alerts(ALL_TENANTS, status="x")
    with pytest.raises(ValueError, match=r"^destination must be a non-empty string or None"):
        reader.list_alerts(ALL_TENANTS, destination=" ")
    for read in (reader.get_alert, reader.full_alert_id):
        with pytest.raises(ValueError, match=r"^alert_id is required"):
            read(ALL_TENANTS, "")
    with pytest.raises(ValueError, match=r"^tenant_id must be a non-empty string or None, got ''"):
        queue(lambda d: d.insert_alert("", {}, "t"))
    for name, bad in (("alert_type", 7), ("circuit_breaker_name", ""), ("incident_id", "i\x00")):
        with pytest.raises(ValueError, match=rf"^{name} must "):
            queue(lambda d, given={"alert_type": "t", name: bad}: d.insert_alert(None, {}, **given))
    with pytest.raises(ValueError, match=r"^payload must be JSON-serialisable"):
        queue(lambda d: d.insert_alert(None, {"x": object()}, "t"))
    with pytest.raises(ValueError, match=r"^tenant_id must be a non-empty string or None, got ''"):
        queue(lambda d: d.mark_incident_alert_sent("", "inc-1", T0))
    with pytest.raises(ValueError, match=r"^lease_seconds must be positive, got 0$"):
        queue(lambda d: d.fetch_pending_alerts(T0, lease_seconds=0))
    with pytest.raises(ValueError, match=r"^max_retries must not be negative, got -1$"):
        queue(lambda d: d.retry_failed_alerts(-1, T0))
    assert AlertQueueItem.select().count(hoc_db) == 0


def test_a_one_second_lease_is_a_lease(queue):
    queue(lambda d: d.insert_alert(None, {}, "t", now=T0))
    (claimed,) = queue(lambda d: d.fetch_pending_alerts(T0, lease_seconds=1))
    assert claimed.next_attempt_at == at(1)
    assert queue(lambda d: d.fetch_pending_alerts(at(0.5))) == []
    assert len(queue(lambda d: d.fetch_pending_alerts(at(1)))) == 1


def test_a_claim_takes_100_alerts_and_a_listing_shows_50_by_default(queue, hoc_db):
    queue(lambda d: [d.insert_alert(None, {"n": i}, "t", now=at(i)) for i in range(101)])
    assert AlertQueueReader(hoc_db).count_old_alerts(at(200), []) == 0  # no status: none to purge
    assert len(AlertQueueReader(hoc_db).list_alerts(ALL_TENANTS)) == 50
    assert len(queue(lambda d: d.fetch_pending_alerts(at(200)))) == 100


def test_alerts_whose_attempts_are_used_up_are_never_due(queue, hoc_db):
    """The sender sleeps until `next_due_at`: an alert it may not try again must not wake it."""
    spent = queue(lambda d: d.insert_alert(None, {}, "spent", max_attempts=1, now=T0))
    (claimed,) = queue(lambda d: d.fetch_pending_alerts(T0))
    assert queue(lambda d: d.update_alert_retry(claimed, T0, at(1), "down"))  # pending, 1 of 1 used
    for status, due in (("sent", 2), ("failed", 3)):
        set_row(queue, queue(lambda d, due=due: d.insert_alert(None, {}, "done", now=at(due))), status=status)
    queue(lambda d: d.insert_alert(None, {}, "later", now=at(30)))
    queue(lambda d: d.insert_alert(None, {}, "sooner", now=at(20)))
    reader = AlertQueueReader(hoc_db)
    assert reader.next_due_at() == at(20)
    assert reader.count_due_alerts(at(60)) == 2
    assert reader.get_alert(ALL_TENANTS, spent.id).status == "pending"


@pytest.fixture
def without_status_indexes(hoc_db):
    """The queue without its (status, ...) indexes, whose order could stand in for an ORDER BY
    (a planner may leave an index unused); they are made again afterwards."""
    indexes = AlertQueueItem._meta.fields_to_index()
    conn = other_connection(hoc_db)
    try:
        for index in indexes:
            conn.execute(f"DROP INDEX {index._name}")
        conn.commit()
        yield
    finally:
        for index in indexes:
            conn.execute(hoc_db.get_sql_context().sql(index).query()[0])
        conn.commit()
        conn.close()


def test_the_oldest_and_the_next_due_alert_are_found_whatever_the_plan(queue, hoc_db, without_status_indexes):
    first = queue(lambda d: d.insert_alert(None, {}, "t", now=at(10)))
    oldest = queue(lambda d: d.insert_alert(None, {}, "t", now=T0))
    queue(lambda d: d.insert_alert(None, {}, "t", now=at(20)))
    set_row(queue, first, next_attempt_at=at(50))  # both retried: due after the last one
    set_row(queue, oldest, next_attempt_at=at(100))
    reader = AlertQueueReader(hoc_db)
    stats = reader.fetch_queue_stats(T0)
    assert (stats["oldest_pending"], stats["oldest_pending_age_seconds"]) == (T0, 0.0)
    assert reader.next_due_at() == at(20)


def test_changing_an_alert_that_is_not_there_changes_nothing(queue):
    assert queue(lambda d: d.retry_alert(ALL_TENANTS, "no-such-alert", T0)) is None
    assert queue(lambda d: d.delete_alert(ALL_TENANTS, "no-such-alert", T0)) is None


def test_a_lapsed_lease_frees_the_alert_at_its_last_instant(queue, hoc_coordinator):
    """At the lease's end a sender may claim the alert again, so an operator may change it too."""
    alert = queue(lambda d: d.insert_alert(None, {}, "t", now=T0))
    queue(lambda d: d.fetch_pending_alerts(T0, lease_seconds=60))
    with hoc_coordinator.transaction() as tx:
        revived = AlertDriver(tx).retry_alert(ALL_TENANTS, alert.id, at(60))
        assert tx.facts == [AlertQueued()]  # a serving sender wakes for it
    assert (revived.next_attempt_at, revived.claim_token) == (at(60), None)


def test_marking_an_incident_alert_sent_touches_that_incident_only(queue, hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        for incident_id in ("inc-1", "inc-2"):
            Incident.insert(id=incident_id, tenant_id="t1", title="x", severity="low", trigger_type="manual",
                            created_at=T0, updated_at=T0).execute(tx.db)
    assert queue(lambda d: d.mark_incident_alert_sent("t1", "inc-1", at(5))) == 1
    rows = {i.id: (i.alert_sent, i.alert_sent_at, i.updated_at) for i in Incident.select().execute(hoc_db)}
    assert rows == {"inc-1": (True, at(5), at(5)), "inc-2": (False, None, T0)}


def test_a_purge_in_steps_deletes_the_oldest_matching_alerts_first(queue, hoc_db):
    pending = queue(lambda d: d.insert_alert(None, {}, "t", now=at(-30)))  # oldest, not to purge
    newer = queue(lambda d: d.insert_alert(None, {}, "t", now=at(-5)))
    older = queue(lambda d: d.insert_alert(None, {}, "t", now=at(-10)))
    set_row(queue, newer, status="failed", next_attempt_at=at(50))  # every index lists newer first
    set_row(queue, older, status="sent", next_attempt_at=at(100))
    assert queue(lambda d: d.purge_old_alerts(T0, ["sent", "failed"], limit=1)) == 1
    assert {a.id for a in AlertQueueItem.select().execute(hoc_db)} == {pending.id, newer.id}


def test_an_operator_waits_for_a_claim_in_progress_and_then_finds_the_alert_busy(queue, hoc_coordinator, hoc_db):
    """PostgreSQL: the operator's read locks the alert, so a sender's claim committed meanwhile
    is seen and the alert is not deleted while it is being delivered."""
    if dialect.of(hoc_db) != dialect.POSTGRESQL:
        pytest.skip("SQLite runs the two transactions one after the other")
    alert = queue(lambda d: d.insert_alert(None, {}, "t", now=T0))
    outcome = []

    def delete():  # its own thread: its own connection and transaction
        try:
            outcome.append(queue(lambda d: d.delete_alert(ALL_TENANTS, alert.id, at(1))))
        except AlertBusy as exc:
            outcome.append(exc)

    with hoc_coordinator.transaction() as tx:
        assert len(AlertDriver(tx).fetch_pending_alerts(T0, lease_seconds=60)) == 1
        operator = threading.Thread(target=delete)
        operator.start()
        _wait_until_a_statement_waits_for_a_lock(hoc_db)
    operator.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], AlertBusy)
    assert AlertQueueReader(hoc_db).get_alert(ALL_TENANTS, alert.id) is not None


def test_a_circuit_breakers_alert_says_the_breaker_and_incident_its_row_holds(queue, hoc_db):
    alert = queue(lambda d: d.insert_alert(None, {"breaker": "open"}, "circuit_breaker",
                                           circuit_breaker_name="costsim", incident_id="inc-7",
                                           channel="email", destination={"recipients": ["ops@acme.test"]},
                                           now=T0))
    assert (alert.alert_type, alert.circuit_breaker_name, alert.incident_id) == ("circuit_breaker", "costsim", "inc-7")
    assert_mirrors_its_row(alert, hoc_db)
