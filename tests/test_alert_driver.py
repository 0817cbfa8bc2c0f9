"""The alert queue: enqueue, atomic claim with a lease, transitions, stats, retry, purge."""
import threading
from datetime import datetime, timedelta, timezone

import pytest

from hoc_drivers.alert_driver import (_LEASE, _SELECT_DUE, ALL_TENANTS, AlertBusy, AlertDriver, AlertQueueReader,
                                     AlertQueueWriter, get_alert_driver)
from hoc_drivers.cross_domain import create_incident_from_cost_anomaly, table_exists
from hoc_drivers.db import CommitForbidden
from hoc_drivers.facts import AlertQueued, GuardStateChanged
from hoc_drivers.models.alerts import AlertQueueItem
from hoc_drivers.models.runs import Incident
from hoc_drivers.transaction_coordinator import TransactionCoordinator

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)


def seconds(n):
    return timedelta(seconds=n)


def enqueue(queue, count=1, at=T0, **fields):
    return [queue(lambda d, i=i: d.insert_alert(None, [{"n": i}], "test", now=at + seconds(i), **fields))
            for i in range(count)]


def stored(db, alert_id):
    return AlertQueueItem.select().where(AlertQueueItem.id == alert_id).get(db)


def test_insert_alert_defaults(queue, hoc_db):
    alert = queue(lambda d: d.insert_alert(None, [{"labels": {"alertname": "X"}}], "disable",
                                           circuit_breaker_name="costsim_v2",
                                           incident_id="inc-1", now=T0))
    row = stored(hoc_db, alert.id)
    assert (row.status, row.attempts, row.max_attempts) == ("pending", 0, 10)
    assert row.next_attempt_at == row.created_at == T0
    assert row.payload == [{"labels": {"alertname": "X"}}]
    assert (row.alert_type, row.circuit_breaker_name, row.incident_id) == ("disable", "costsim_v2", "inc-1")
    assert row.channel == "alertmanager" and row.tenant_id is None and row.sent_at is None
    assert alert.dirty_fields == [] and row.dirty_fields == []  # the stored row, clean as Peewee reads one


@pytest.mark.parametrize("fields, message", [
    ({"channel": "sms"}, "unknown alert channel 'sms'"),
    ({"max_attempts": 0}, "max_attempts must be a positive integer"),
    ({"payload": [float("nan")]}, "^payload must be JSON-serialisable: Out of range float"),
    ({"payload": None}, r"^payload is required \(a JSON value\)$"),
])
def test_insert_alert_rejects_bad_input(queue, hoc_db, fields, message):
    fields = dict(fields)  # the parameter itself is shared by every run of this test
    payload = fields.pop("payload") if "payload" in fields else []
    with pytest.raises(ValueError, match=message):
        queue(lambda d: d.insert_alert(None, payload, "test", **fields))
    assert AlertQueueItem.select().count(hoc_db) == 0


def test_fetch_claims_due_alerts_oldest_first(queue):
    a, b, c = enqueue(queue, 3)
    queue(lambda d: d.insert_alert(None, [], "later", now=T0 + seconds(60)))
    claimed = queue(lambda d: d.fetch_pending_alerts(T0 + seconds(2), batch_size=10))
    assert [x.id for x in claimed] == [a.id, b.id, c.id]     # next_attempt_at == now is due
    assert queue(lambda d: d.fetch_pending_alerts(T0 + seconds(2), batch_size=10)) == []
    assert len({x.claim_token for x in claimed}) == 1


def test_fetch_respects_batch_size_status_and_attempts(queue):
    a, b, c, d_ = enqueue(queue, 4)
    queue(lambda d: AlertQueueItem.update(status="sent").where(AlertQueueItem.id == a.id).execute(d.db))
    queue(lambda d: AlertQueueItem.update(attempts=10).where(AlertQueueItem.id == b.id).execute(d.db))
    first = queue(lambda d: d.fetch_pending_alerts(T0 + seconds(10), batch_size=1))
    second = queue(lambda d: d.fetch_pending_alerts(T0 + seconds(10), batch_size=1))
    assert [first[0].id, second[0].id] == [c.id, d_.id]
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        queue(lambda d: d.fetch_pending_alerts(T0, batch_size=0))


def test_claiming_outside_a_transaction_is_refused(hoc_coordinator, queue):
    enqueue(queue, 1)
    with hoc_coordinator.transaction() as tx:
        driver = AlertDriver(tx)
    with pytest.raises(CommitForbidden):
        driver.fetch_pending_alerts(T0, 10)


def test_a_crashed_senders_lease_expires_and_the_alert_is_due_again(queue, hoc_db):
    (alert,) = enqueue(queue, 1)
    lost = queue(lambda d: d.fetch_pending_alerts(T0, lease_seconds=30))[0]
    assert queue(lambda d: d.fetch_pending_alerts(T0 + seconds(29.999))) == []
    again = queue(lambda d: d.fetch_pending_alerts(T0 + seconds(30)))
    assert [x.id for x in again] == [alert.id]
    # the first sender comes back late: its claim is gone, its outcome is not recorded
    assert queue(lambda d: d.update_alert_sent(lost, T0 + seconds(31))) is False
    assert queue(lambda d: d.update_alert_sent(again[0], T0 + seconds(31))) is True
    assert stored(hoc_db, alert.id).status == "sent"


def test_an_outcome_without_the_current_claim_token_changes_nothing(queue, hoc_db):
    (alert,) = enqueue(queue, 1)

    def records_nothing(holder, when):
        before = stored(hoc_db, alert.id).__data__
        assert queue(lambda d: d.update_alert_sent(holder, when)) is False
        assert queue(lambda d: d.update_alert_retry(holder, when, when + seconds(2), "x")) is False
        assert queue(lambda d: d.update_alert_failed(holder, when, "x")) is False
        assert stored(hoc_db, alert.id).__data__ == before

    records_nothing(stored(hoc_db, alert.id), T0)            # never claimed: no token to match
    stale = queue(lambda d: d.fetch_pending_alerts(T0, lease_seconds=30))[0]
    current = queue(lambda d: d.fetch_pending_alerts(T0 + seconds(30), lease_seconds=30))[0]
    records_nothing(stale, T0 + seconds(31))                 # its lease lapsed, claimed again
    assert queue(lambda d: d.update_alert_retry(current, T0, T0 + seconds(2), "x")) is True


def test_update_alert_sent(queue, hoc_db):
    enqueue(queue, 1)
    (alert,) = queue(lambda d: d.fetch_pending_alerts(T0))
    assert queue(lambda d: d.update_alert_sent(alert, T0 + seconds(1))) is True
    row = stored(hoc_db, alert.id)
    assert (row.status, row.sent_at, row.attempts, row.claim_token) == ("sent", T0 + seconds(1), 0, None)
    assert alert.status == "sent"
    assert queue(lambda d: d.update_alert_sent(alert, T0 + seconds(2))) is False


def test_update_alert_retry_counts_and_keeps_the_last_error(queue, hoc_db):
    enqueue(queue, 1)
    (alert,) = queue(lambda d: d.fetch_pending_alerts(T0))
    queue(lambda d: d.update_alert_retry(alert, T0, T0 + seconds(2), "HTTP 503: busy"))
    row = stored(hoc_db, alert.id)
    assert (row.status, row.attempts, row.last_attempt_at, row.next_attempt_at, row.last_error) == \
        ("pending", 1, T0, T0 + seconds(2), "HTTP 503: busy")
    (alert,) = queue(lambda d: d.fetch_pending_alerts(T0 + seconds(2)))
    queue(lambda d: d.update_alert_retry(alert, T0 + seconds(2), T0 + seconds(6), None))
    row = stored(hoc_db, alert.id)
    assert (row.attempts, row.last_error) == (2, "HTTP 503: busy")


def test_update_alert_failed(queue, hoc_db):
    enqueue(queue, 1)
    (alert,) = queue(lambda d: d.fetch_pending_alerts(T0))
    queue(lambda d: d.update_alert_failed(alert, T0, "Timeout: read"))
    row = stored(hoc_db, alert.id)
    assert (row.status, row.attempts, row.last_error, row.claim_token) == ("failed", 1, "Timeout: read", None)


def test_mark_incident_alert_sent_is_tenant_filtered(queue, hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        Incident.insert(id="inc-1", tenant_id="t1", title="x", severity="low",
                        trigger_type="manual").execute(tx.db)
    assert queue(lambda d: d.mark_incident_alert_sent("t2", "inc-1", T0)) == 0
    assert queue(lambda d: d.mark_incident_alert_sent("t1", "inc-1", T0)) == 1
    incident = Incident.select().where(Incident.id == "inc-1").get(hoc_db)
    assert incident.alert_sent is True and incident.alert_sent_at == T0
    assert queue(lambda d: d.mark_incident_alert_sent(None, "missing", T0)) == 0


def test_the_incident_an_alert_names_is_a_governance_incident(queue, hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        incident_id = create_incident_from_cost_anomaly(tx, "t1", "an-1", "DRIFT", "HIGH", 900, 100)
        alert = AlertDriver(tx).insert_alert("t1", [], "cost", incident_id=incident_id, now=T0)
    (claimed,) = queue(lambda d: d.fetch_pending_alerts(T0))
    assert queue(lambda d: d.update_alert_sent(claimed, T0 + seconds(1)))
    assert queue(lambda d: d.mark_incident_alert_sent(alert.tenant_id, alert.incident_id, T0 + seconds(1))) == 1
    incident = Incident.select().where(Incident.id == incident_id).get(hoc_db)
    assert (incident.alert_sent, incident.alert_sent_at) == (True, T0 + seconds(1))
    assert not table_exists(hoc_db, "costsim_cb_incidents")  # no circuit breaker, no table of its own


def test_get_alert_driver_is_the_seeds_name_for_the_driver(hoc_coordinator, hoc_db):
    with hoc_coordinator.transaction() as tx:
        driver = get_alert_driver(tx)
        assert type(driver) is AlertDriver and driver.tx is tx and driver.db is tx.db
        driver.insert_alert(None, [], "test", now=T0)
    assert get_alert_driver.__module__ == "hoc_drivers.alert_driver"
    assert AlertQueueReader(hoc_db).fetch_queue_stats(T0)["pending"] == 1
    with pytest.raises(TypeError, match="a writer takes the coordinator's transaction first"):
        get_alert_driver(hoc_db)  # no hidden global database: a database is not a transaction
    with pytest.raises(CommitForbidden):
        driver.insert_alert(None, [], "test")  # its transaction has ended


def test_retry_failed_alerts(queue, hoc_db):
    a, b = enqueue(queue, 2)
    queue(lambda d: AlertQueueItem.update(status="failed", attempts=10).execute(d.db))
    assert queue(lambda d: d.retry_failed_alerts(0, T0 + seconds(100))) == 0
    assert queue(lambda d: d.retry_failed_alerts(3, T0 + seconds(100))) == 2
    row = stored(hoc_db, a.id)
    assert (row.status, row.max_attempts, row.attempts, row.next_attempt_at) == \
        ("pending", 13, 10, T0 + seconds(100))
    assert len(queue(lambda d: d.fetch_pending_alerts(T0 + seconds(100)))) == 2
    with pytest.raises(ValueError):
        queue(lambda d: d.retry_failed_alerts(-1, T0))


def test_purge_old_alerts(queue, hoc_db):
    old_sent, old_failed, old_pending, cutoff_exact = enqueue(queue, 4, at=T0 - seconds(10))
    queue(lambda d: AlertQueueItem.update(status="sent").where(
        AlertQueueItem.id.in_([old_sent.id, cutoff_exact.id])).execute(d.db))
    queue(lambda d: AlertQueueItem.update(status="failed").where(AlertQueueItem.id == old_failed.id).execute(d.db))
    cutoff = cutoff_exact.created_at                        # strictly before the cutoff only
    assert AlertQueueReader(hoc_db).count_old_alerts(cutoff, ["sent", "failed"]) == 2
    assert queue(lambda d: d.purge_old_alerts(cutoff, [])) == 0
    assert queue(lambda d: d.purge_old_alerts(cutoff, ["sent", "failed"], limit=1)) == 1
    assert queue(lambda d: d.purge_old_alerts(cutoff, ["sent", "failed"])) == 1
    remaining = {row.id for row in AlertQueueItem.select().execute(hoc_db)}
    assert remaining == {old_pending.id, cutoff_exact.id}


def test_queue_stats(queue, hoc_db):
    reader = AlertQueueReader(hoc_db)
    assert reader.fetch_queue_stats(T0) == {"pending": 0, "sent": 0, "failed": 0,
                                            "oldest_pending": None,
                                            "oldest_pending_age_seconds": None}
    a, b, c, d_ = enqueue(queue, 4)
    queue(lambda d: AlertQueueItem.update(status="sent").where(AlertQueueItem.id == a.id).execute(d.db))
    queue(lambda d: AlertQueueItem.update(status="failed").where(AlertQueueItem.id == b.id).execute(d.db))
    stats = reader.fetch_queue_stats(T0 + seconds(62))
    assert stats == {"pending": 2, "sent": 1, "failed": 1, "oldest_pending": T0 + seconds(2),
                     "oldest_pending_age_seconds": 60.0}
    assert reader.count_due_alerts(T0 + seconds(2)) == 1


def query_plan(db, statement, params):
    sql, template = statement.sql(db)
    assert len(template) == len(params)
    return " ".join(row[-1] for row in db.execute_sql("EXPLAIN QUERY PLAN " + sql, params))


@pytest.mark.parametrize("limit", ["10", True, 0, -1, 10_001, 2**70, 1.5, None])
def test_list_alerts_refuses_a_bad_limit(queue, hoc_db, limit):
    enqueue(queue)
    reader = AlertQueueReader(hoc_db)
    with pytest.raises(ValueError, match="limit must be an integer from 1 to 10000"):
        reader.list_alerts(ALL_TENANTS, limit=limit)
    assert len(reader.list_alerts(ALL_TENANTS, limit=10_000)) == 1


@pytest.mark.sqlite_only
def test_the_claim_walks_the_indexes_and_never_sorts(hoc_db, hoc_coordinator):
    plan = query_plan(hoc_db, _SELECT_DUE, ["pending", "2026-05-01 12:00:00.000000", 10])
    assert "USING INDEX costsim_alert_queue_status_next_attempt_at" in plan
    assert "TEMP B-TREE" not in plan
    with hoc_coordinator.transaction() as tx:  # the guard refuses even EXPLAIN of a write outside one
        plan = query_plan(tx.db, _LEASE, ["2026-05-01 12:05:00.000000", "token", '["a", "b"]'])
    assert "SEARCH costsim_alert_queue USING INDEX sqlite_autoindex_costsim_alert_queue_1 (id=?)" in plan


def test_two_concurrent_claimers_never_share_an_alert(hoc_db):
    coordinator = TransactionCoordinator(hoc_db)
    with coordinator.transaction() as tx:
        driver = AlertDriver(tx)
        for i in range(300):
            driver.insert_alert(None, [{"n": i}], "test", now=T0)
    start = threading.Barrier(2)
    claimed = {0: [], 1: []}

    def claimer(worker):
        start.wait()
        while True:
            with coordinator.transaction() as tx:
                batch = AlertDriver(tx).fetch_pending_alerts(T0, batch_size=7)
            if not batch:
                return
            claimed[worker].extend(alert.id for alert in batch)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = claimed[0] + claimed[1]
    assert len(everything) == len(set(everything)) == 300


def test_list_alerts_refuses_an_unknown_status(queue, hoc_db):
    enqueue(queue)
    reader = AlertQueueReader(hoc_db)
    with pytest.raises(ValueError, match="unknown alert status 'PENDING'"):
        reader.list_alerts(ALL_TENANTS, status="PENDING")
    assert len(reader.list_alerts(ALL_TENANTS, status="pending")) == 1
    assert reader.list_alerts(ALL_TENANTS, status="sent") == []



def test_the_writer_notes_what_it_changed(queue, hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        Incident.insert(id="inc-1", tenant_id="t1", title="x", severity="low",
                        trigger_type="manual").execute(tx.db)
    with hoc_coordinator.transaction() as tx:  # an alert of no tenant: the incident's tenant
        assert AlertDriver(tx).mark_incident_alert_sent(None, "inc-1", T0) == 1
        assert tx.facts == [GuardStateChanged("t1")]
    with hoc_coordinator.transaction() as tx:
        assert AlertDriver(tx).retry_failed_alerts(1, T0) == 0
        assert tx.facts == []
        AlertDriver(tx).insert_alert("t1", [], "test")
        assert tx.facts == [AlertQueued()]


def test_operator_reads_are_tenant_scoped_and_filtered(queue, hoc_db):
    queue(lambda d: d.insert_alert("acme", {}, "t", channel="webhook",
                                   destination={"url": "https://hooks.acme.test/a"}, now=T0))
    mail = queue(lambda d: d.insert_alert("acme", {}, "t", channel="email",
                                          destination={"recipients": ["ops@acme.test"]}, now=T0 + seconds(5)))
    queue(lambda d: d.insert_alert("globex", {}, "t", channel="webhook", now=T0 + seconds(9)))
    queue(lambda d: d.insert_alert(None, {}, "t", now=T0 + seconds(10)))
    reader = AlertQueueReader(hoc_db)
    assert [a.tenant_id for a in reader.list_alerts("acme")] == ["acme", "acme"]
    assert [a.tenant_id for a in reader.list_alerts(ALL_TENANTS)] == [None, "globex", "acme", "acme"]
    assert [a.id for a in reader.list_alerts("acme", channel="email")] == [mail.id]
    assert [a.id for a in reader.list_alerts("acme", destination="ops@acme")] == [mail.id]
    assert len(reader.list_alerts("acme", destination="hooks.acme")) == 1
    assert [a.id for a in reader.list_alerts("acme", since=T0 + seconds(1))] == [mail.id]
    assert reader.fetch_stats("acme", T0)["pending"] == 2
    assert reader.fetch_queue_stats(T0)["pending"] == 4
    assert reader.get_alert("globex", mail.id) is None and reader.get_alert("acme", mail.id).id == mail.id
    with pytest.raises(ValueError, match="tenant_id is required"):
        reader.list_alerts(None)


def test_an_alert_being_delivered_cannot_be_deleted_or_retried(queue, hoc_db):
    (alert,) = enqueue(queue, at=T0)
    (claimed,) = queue(lambda d: d.fetch_pending_alerts(T0, lease_seconds=60))
    for change in (AlertQueueWriter.delete_alert, AlertQueueWriter.retry_alert):
        with pytest.raises(AlertBusy, match="being delivered"):
            queue(lambda d, change=change: change(d, ALL_TENANTS, alert.id, T0 + seconds(30)))
    assert stored(hoc_db, alert.id).claim_token == claimed.claim_token
    revived = queue(lambda d: d.retry_alert(ALL_TENANTS, alert.id, T0 + seconds(61)))  # the lease lapsed
    assert (revived.claim_token, revived.next_attempt_at) == (None, T0 + seconds(61))
    assert queue(lambda d: d.delete_alert(ALL_TENANTS, alert.id, T0 + seconds(62))).id == alert.id
    assert AlertQueueReader(hoc_db).get_alert(ALL_TENANTS, alert.id) is None


def test_retry_refuses_a_sent_alert_and_gives_a_spent_one_an_attempt(queue, hoc_db):
    a, b = enqueue(queue, 2)
    queue(lambda d: AlertQueueItem.update(status="sent", sent_at=T0).where(AlertQueueItem.id == a.id).execute(d.db))
    queue(lambda d: AlertQueueItem.update(status="failed", attempts=10).where(AlertQueueItem.id == b.id)
          .execute(d.db))
    with pytest.raises(AlertBusy, match="already sent"):
        queue(lambda d: d.retry_alert(ALL_TENANTS, a.id, T0))
    queue(lambda d: d.retry_alert(ALL_TENANTS, b.id, T0 + seconds(5)))
    assert [x.id for x in queue(lambda d: d.fetch_pending_alerts(T0 + seconds(5)))] == [b.id]
