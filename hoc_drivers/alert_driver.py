"""Alert Driver: the offline-first alert queue (enqueue, claim, sent / retry / failed).

`AlertQueueReader(db)` only SELECTs. `AlertQueueWriter(tx)` writes inside the caller's
coordinator transaction; it never commits and never decides retry or backoff (the sender
does). Claiming is atomic: the coordinator opens every transaction with BEGIN IMMEDIATE, so
between the SELECT of due alerts and the UPDATE that leases them no other sender can write; the
lease pushes `next_attempt_at` past the claim, so the same alert is never handed to two
senders, and an alert whose sender crashed is due again once its lease has passed. Sent /
retry / failed updates are fenced by the claim token: each UPDATE matches only while the row
still carries the caller's token (an alert that was never claimed, or whose lease lapsed and
was claimed again, matches nothing), so a stale outcome changes nothing and returns False.

The queue is shared by every tenant (an alert raised by a circuit breaker has none). Reads an
operator makes (stats, list, get) and changes to one alert (retry, delete) take a tenant, or
`ALL_TENANTS` to look across tenants (alerts of no tenant included); the sender's claim works on
the whole queue. An alert claimed by a sender whose lease has not ended is being delivered: it
cannot be retried or deleted (`AlertBusy`) until its outcome is recorded or its lease lapses.

What the writer changes it notes on the transaction: `AlertQueued()` when it queues or revives
alerts (a serving sender wakes after COMMIT), `GuardStateChanged(tenant)` when it marks an
incident alert-sent.

**(ours)** The incident an alert names is a governance incident: table `incidents`, the one
incident table of this edition (run failures, cost anomalies and kill-switch incidents, SPEC
§0–§2). `mark_incident_alert_sent` sets its `alert_sent` and `alert_sent_at`, so the guard
console shows that the alert went out. The server edition marks the incident of its CostSim
circuit breaker (`costsim_cb_incidents`); this edition has no circuit breaker and no such table.

`get_alert_driver(tx)` is the seed's name for `AlertDriver(tx)`.
"""
import json
from datetime import timedelta

from peewee import CharField, Field, IntegerField, TextField, fn

from .facts import AlertQueued, GuardStateChanged
from .dialect import contains_text, for_update, id_list, json_member_text, skip_locked
from .listing import expand_id, page
from .models.alerts import ALERT_CHANNELS, ALERT_STATUSES, AlertQueueItem
from .models.base import PLACEHOLDER, PreparedInsert, PreparedQuery, as_utc, new_id, timestamp_text, utcnow
from .models.runs import Incident
from .validation import (optional_text, require_database, require_int, require_tenant,
                         require_text, require_transaction)

ACCESS = "READ+WRITE"

__all__ = ["ALL_TENANTS", "AlertBusy", "AlertQueueReader", "AlertQueueWriter", "AlertDriver",
           "DEFAULT_LEASE_SECONDS", "PURGE_STEP",
           "delete_old_alerts", "get_alert_driver"]

DEFAULT_LEASE_SECONDS = 300
PURGE_STEP = 1000  # alerts `delete_old_alerts` deletes per transaction
ALL_TENANTS = "*all-tenants*"  # a queue read across every tenant, asked for by name


class AlertBusy(RuntimeError):
    """The alert cannot be changed now: it is being delivered (a live claim) or already sent."""


def _scope(tenant_id):
    """The WHERE condition of a queue read of `tenant_id` (or of `ALL_TENANTS`)."""
    if tenant_id == ALL_TENANTS:
        return AlertQueueItem.id.is_null(False)
    return AlertQueueItem.tenant_id == require_tenant(tenant_id)


def _require_choice(value, choices, what):
    """`value` when it is None or one of `choices`, else ValueError naming `what`."""
    if value is not None and value not in choices:
        raise ValueError(f"unknown alert {what} {value!r} (expected one of: {', '.join(choices)})")
    return value


def _due(now):
    """Pending, due by `now`, attempts left (served by the (status, next_attempt_at) index)."""
    return ((AlertQueueItem.status == "pending") & (AlertQueueItem.next_attempt_at <= now)
            & (AlertQueueItem.attempts < AlertQueueItem.max_attempts))


def _db_time(value):
    return AlertQueueItem.next_attempt_at.db_value(value)


def _claimed_update(changes):
    """UPDATE of one pending alert still held by its claim, built once.

    Parameters: the values of `changes` in column order, then the alert id and claim token
    (`=`, so a NULL token, an alert never claimed, matches nothing). The claim token is cleared.
    """
    return PreparedQuery(lambda: AlertQueueItem.update({**changes, AlertQueueItem.claim_token: None})
                         .where((AlertQueueItem.id == PLACEHOLDER)
                                & (AlertQueueItem.status == "pending")
                                & (AlertQueueItem.claim_token == PLACEHOLDER)))


# The claim: the due alerts in index order, then their lease (ids as one JSON array).
_SELECT_DUE = PreparedQuery(lambda: skip_locked(AlertQueueItem.select().where(_due(PLACEHOLDER))
                                                .order_by(AlertQueueItem.next_attempt_at).limit(PLACEHOLDER)))
_LEASE = PreparedQuery(lambda: AlertQueueItem.update(
    {AlertQueueItem.next_attempt_at: PLACEHOLDER, AlertQueueItem.claim_token: PLACEHOLDER})
    .where(AlertQueueItem.id.in_(id_list(PLACEHOLDER))))
_FIELDS = AlertQueueItem._meta.sorted_fields
_INSERT_ALERT = PreparedInsert(AlertQueueItem, (
    "id", "tenant_id", "payload", "alert_type", "circuit_breaker_name", "incident_id", "channel",
    "destination", "max_attempts", "next_attempt_at", "created_at"))
_ALERT_QUEUED = AlertQueued()  # the one fact every queued alert notes (facts are values)
_PAYLOAD_TEXT, _DESTINATION_TEXT = AlertQueueItem.payload.db_value, AlertQueueItem.destination.db_value  # as stored


# (field name, its python_value) in column order; None where the driver's value is already the
# Python value (text and integer columns: python_value would only call str() or int() on it)
_ROW_CONVERSIONS = [(f.name, None if type(f).python_value is Field.python_value
                     and type(f).adapt in (TextField.adapt, CharField.adapt, IntegerField.adapt)
                     else f.python_value) for f in _FIELDS]


def _alert_from_row(row):
    """An AlertQueueItem from a full row in column order."""
    return AlertQueueItem.of_row({name: value if convert is None or value is None else convert(value)
                                  for (name, convert), value in zip(_ROW_CONVERSIONS, row, strict=True)})


def _keep_error_unless(new_error):
    """The new last_error when it is not empty, else the stored one."""
    return fn.COALESCE(fn.NULLIF(new_error, ""), AlertQueueItem.last_error)


_MARK_SENT = _claimed_update({AlertQueueItem.status: "sent", AlertQueueItem.sent_at: PLACEHOLDER})
_MARK_RETRY = _claimed_update({AlertQueueItem.attempts: AlertQueueItem.attempts + 1,
                               AlertQueueItem.last_attempt_at: PLACEHOLDER,
                               AlertQueueItem.next_attempt_at: PLACEHOLDER,
                               AlertQueueItem.last_error: _keep_error_unless(PLACEHOLDER)})
_MARK_FAILED = _claimed_update({AlertQueueItem.status: "failed",
                                AlertQueueItem.attempts: AlertQueueItem.attempts + 1,
                                AlertQueueItem.last_attempt_at: PLACEHOLDER,
                                AlertQueueItem.last_error: _keep_error_unless(PLACEHOLDER)})


class AlertQueueReader:
    """Queue statistics and listings; only SELECTs."""

    ACCESS = "READ"

    def __init__(self, db):
        self.db = require_database(db)

    def fetch_queue_stats(self, now=None):
        """`fetch_stats` of the whole queue (every tenant, and alerts of none): what the sender
        drains."""
        return self.fetch_stats(ALL_TENANTS, now)

    def fetch_stats(self, tenant_id, now=None):
        """{pending, sent, failed, oldest_pending, oldest_pending_age_seconds} of the alerts of
        `tenant_id` (`ALL_TENANTS`: of the whole queue).

        `oldest_pending` is the creation time of the oldest pending alert (None when nothing
        is pending); its age is measured from `now` (default: the current time).
        """
        scope = _scope(tenant_id)
        counts = dict.fromkeys(ALERT_STATUSES, 0)
        query = (AlertQueueItem.select(AlertQueueItem.status, fn.COUNT(AlertQueueItem.id))
                 .where(AlertQueueItem.status.in_(ALERT_STATUSES) & scope)
                 .group_by(AlertQueueItem.status).tuples())
        for status, count in query.execute(self.db):
            counts[status] = count
        oldest = (AlertQueueItem.select(AlertQueueItem.created_at)
                  .where((AlertQueueItem.status == "pending") & scope)
                  .order_by(AlertQueueItem.created_at).limit(1).scalar(self.db))
        age = None
        if oldest is not None:
            age = max(0.0, ((now or utcnow()) - oldest).total_seconds())
        return {**counts, "oldest_pending": oldest, "oldest_pending_age_seconds": age}

    def count_due_alerts(self, now):
        """How many alerts `fetch_pending_alerts(now, ...)` could claim in total."""
        return AlertQueueItem.select().where(_due(now)).count(self.db)

    def next_due_at(self):
        """When the next pending alert with attempts left falls due (None: none is pending)."""
        return (AlertQueueItem.select(AlertQueueItem.next_attempt_at)
                .where((AlertQueueItem.status == "pending")
                       & (AlertQueueItem.attempts < AlertQueueItem.max_attempts))
                .order_by(AlertQueueItem.next_attempt_at).limit(1).scalar(self.db))

    def count_old_alerts(self, cutoff, statuses):
        """How many alerts `purge_old_alerts(cutoff, statuses)` would delete."""
        if not statuses:
            return 0
        return (AlertQueueItem.select()
                .where((AlertQueueItem.created_at < cutoff) & AlertQueueItem.status.in_(statuses))
                .count(self.db))

    def list_alerts(self, tenant_id, status=None, channel=None, destination=None, since=None, limit=50,
                    until=None, offset=0):
        """The alerts of `tenant_id` (or `ALL_TENANTS`), newest first, at most `limit` after
        skipping `offset`.

        Filters: `status`, `channel`, `destination` (text the destination's URL or one of its
        e-mail recipients contains), `since` / `until` (created at or after / before).
        """
        condition = _scope(tenant_id)
        if _require_choice(status, ALERT_STATUSES, "status") is not None:
            condition &= AlertQueueItem.status == status
        if _require_choice(channel, ALERT_CHANNELS, "channel") is not None:
            condition &= AlertQueueItem.channel == channel
        if optional_text(destination, "destination") is not None:
            # recipients are matched in their JSON array text (json_each in a read is refused
            # by the commit guard: SQLite reports its first use as a schema write)
            url, recipients = (json_member_text(AlertQueueItem.destination, key) for key in ("url", "recipients"))
            condition &= contains_text(url, destination) | contains_text(recipients, destination)
        query = page(AlertQueueItem.select().where(condition), AlertQueueItem.created_at, since, until,
                     offset, limit)
        return list(query.execute(self.db))

    def full_alert_id(self, tenant_id, prefix):
        """The id of `tenant_id`'s alert (or `ALL_TENANTS`') starting with `prefix`; None when
        none does; listing.AmbiguousId when several do."""
        return expand_id(self.db, AlertQueueItem.select().where(_scope(tenant_id)), AlertQueueItem.id,
                         require_text(prefix, "alert_id"))

    def get_alert(self, tenant_id, alert_id):
        """The alert `alert_id` of `tenant_id` (or `ALL_TENANTS`); None if there is none."""
        return next(iter(_alert_query(tenant_id, alert_id).execute(self.db)), None)


def _alert_query(tenant_id, alert_id):
    """SELECT of the alert `alert_id` of `tenant_id` (or `ALL_TENANTS`)."""
    require_text(alert_id, "alert_id")
    return AlertQueueItem.select().where(_scope(tenant_id) & (AlertQueueItem.id == alert_id))


class AlertQueueWriter:
    """Enqueue, claim and state transitions; writes in the caller's transaction, never commits."""

    ACCESS = "WRITE"

    def __init__(self, tx):
        self.tx = require_transaction(tx, check_open=False)

    def insert_alert(self, tenant_id, payload, alert_type, circuit_breaker_name=None,
                     incident_id=None, channel="alertmanager", destination=None, max_attempts=10,
                     now=None):
        """Queue one alert of tenant `tenant_id` (None: of no tenant, e.g. a circuit breaker's),
        status pending, due `now`; returns the stored row.

        `channel` is alertmanager, webhook, slack or email; `destination` is a JSON object
        ({"url": ...} for HTTP channels, {"recipients": [...]} for e-mail, optional "headers").
        """
        tx = self.tx
        tx.require_open()
        optional_text(tenant_id, "tenant_id")
        optional_text(alert_type, "alert_type")
        optional_text(circuit_breaker_name, "circuit_breaker_name")
        optional_text(incident_id, "incident_id")
        if payload is None:
            raise ValueError("payload is required (a JSON value)")
        if channel not in ALERT_CHANNELS:
            raise ValueError(f"unknown alert channel {channel!r} "
                             f"(expected one of: {', '.join(ALERT_CHANNELS)})")
        require_int(max_attempts, "max_attempts", 1)
        now = as_utc(now) if now else tx.now
        stamp = tx.now_text if now is tx.now else timestamp_text(now)
        alert_id = new_id()
        _INSERT_ALERT.execute_validated(tx.db, (  # in _INSERT_ALERT's order; every text checked above
            alert_id, tenant_id, _PAYLOAD_TEXT(payload), alert_type, circuit_breaker_name, incident_id,
            channel, _DESTINATION_TEXT(destination), max_attempts, stamp, stamp))
        tx.note(_ALERT_QUEUED)
        return AlertQueueItem.of_row({
            "id": alert_id, "tenant_id": tenant_id, "payload": payload, "alert_type": alert_type,
            "circuit_breaker_name": circuit_breaker_name, "incident_id": incident_id, "channel": channel,
            "destination": destination, "max_attempts": max_attempts, "next_attempt_at": now, "created_at": now,
            "status": "pending", "attempts": 0, "last_attempt_at": None, "last_error": None, "sent_at": None,
            "claim_token": None})

    def fetch_pending_alerts(self, now, batch_size=100, lease_seconds=DEFAULT_LEASE_SECONDS):
        """Claim up to `batch_size` due alerts, oldest `next_attempt_at` first.

        Due = pending, `next_attempt_at <= now`, attempts < max_attempts. Each claimed alert
        gets a claim token and `next_attempt_at = now + lease_seconds`; record its outcome
        (sent / retry / failed) before the lease ends. Must run inside a coordinator
        transaction, which makes the claim atomic: on SQLite its BEGIN IMMEDIATE; on PostgreSQL
        the due rows are locked as they are read, skipping those another claimer holds.
        """
        self.tx.require_open()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
        due = [_alert_from_row(row)
               for row in _SELECT_DUE.execute(self.tx.db, (_db_time(now), batch_size))]
        if not due:
            return []
        token, lease_until = new_id(), now + timedelta(seconds=lease_seconds)
        _LEASE.execute(self.tx.db, (_db_time(lease_until), token,
                                    json.dumps([alert.id for alert in due])))
        for alert in due:
            alert.next_attempt_at, alert.claim_token = lease_until, token
        return due

    def _update_claimed(self, alert, statement, params, changes):
        """Run a claimed-alert UPDATE; mirror `changes` on `alert`. False if the claim was lost."""
        cursor = statement.execute(self.tx.db, (*params, alert.id, alert.claim_token))
        if cursor.rowcount != 1:
            return False
        alert.__data__.update(changes, claim_token=None)
        return True

    def update_alert_sent(self, alert, sent_at):
        """Mark the alert sent at `sent_at`; False (nothing changed) unless `alert` still holds
        its claim (see the module docstring)."""
        self.tx.require_open()
        return self._update_claimed(alert, _MARK_SENT, (_db_time(sent_at),),
                                    {"status": "sent", "sent_at": sent_at})

    def update_alert_retry(self, alert, last_attempt_at, next_attempt_at, last_error=None):
        """One more failed attempt; due again at `next_attempt_at` (last_error kept if empty).
        False (nothing changed) unless `alert` still holds its claim."""
        self.tx.require_open()
        return self._update_claimed(
            alert, _MARK_RETRY,
            (_db_time(last_attempt_at), _db_time(next_attempt_at), last_error or None),
            {"attempts": alert.attempts + 1, "last_attempt_at": last_attempt_at,
             "next_attempt_at": next_attempt_at, "last_error": last_error or alert.last_error})

    def update_alert_failed(self, alert, last_attempt_at, last_error=None):
        """A last failed attempt: status failed (last_error kept if the new one is empty).
        False (nothing changed) unless `alert` still holds its claim."""
        self.tx.require_open()
        return self._update_claimed(
            alert, _MARK_FAILED, (_db_time(last_attempt_at), last_error or None),
            {"status": "failed", "attempts": alert.attempts + 1,
             "last_attempt_at": last_attempt_at, "last_error": last_error or alert.last_error})

    def mark_incident_alert_sent(self, tenant_id, incident_id, sent_at):
        """Set alert_sent / alert_sent_at on governance incident `incident_id` (table
        `incidents`) of tenant `tenant_id` (None: the alert had no tenant, so of whichever
        tenant it is); returns the row count (0 when there is no such incident)."""
        self.tx.require_open()
        condition = Incident.id == incident_id
        if optional_text(tenant_id, "tenant_id") is not None:
            condition &= Incident.tenant_id == tenant_id
        tenants = list(Incident.update(alert_sent=True, alert_sent_at=sent_at, updated_at=sent_at)
                       .where(condition).returning(Incident.tenant_id).tuples().execute(self.tx.db))
        for (tenant,) in tenants:
            self.tx.note(GuardStateChanged(tenant))
        return len(tenants)

    def retry_failed_alerts(self, max_retries, now):
        """Failed alerts back to pending with `max_retries` more attempts, due `now`; count."""
        self.tx.require_open()
        if max_retries < 0:
            raise ValueError(f"max_retries must not be negative, got {max_retries}")
        revived = (AlertQueueItem.update(
                       status="pending", max_attempts=AlertQueueItem.max_attempts + max_retries,
                       next_attempt_at=now, claim_token=None)
                   .where((AlertQueueItem.status == "failed")
                          & (AlertQueueItem.attempts < AlertQueueItem.max_attempts + max_retries))
                   .execute(self.tx.db))
        if revived:
            self.tx.note(_ALERT_QUEUED)
        return revived

    def _load_changeable(self, tenant_id, alert_id, now):
        """The alert `alert_id` of `tenant_id` (None if there is none); AlertBusy while a sender's
        claim on it is live."""
        self.tx.require_open()
        # PostgreSQL: the row stays locked, so no sender can lease it between this read and the write
        query = for_update(_alert_query(tenant_id, alert_id), self.tx.db)
        alert = next(iter(query.execute(self.tx.db)), None)
        if alert is not None and alert.claim_token is not None and alert.status == "pending" \
                and alert.next_attempt_at > now:
            raise AlertBusy(f"alert {alert_id} is being delivered (claimed until "
                            f"{alert.next_attempt_at.isoformat()}); try again after its outcome")
        return alert

    def retry_alert(self, tenant_id, alert_id, now):
        """Make a pending or failed alert of `tenant_id` (or `ALL_TENANTS`) due `now`, pending,
        with at least one attempt left; returns it (None if there is none). AlertBusy for a
        sent alert or one being delivered."""
        alert = self._load_changeable(tenant_id, alert_id, now)
        if alert is None:
            return None
        if alert.status == "sent":
            raise AlertBusy(f"alert {alert_id} was already sent at {alert.sent_at.isoformat()}")
        changes = {"status": "pending", "next_attempt_at": now, "claim_token": None,
                   "max_attempts": max(alert.max_attempts, alert.attempts + 1)}
        AlertQueueItem.update(changes).where(AlertQueueItem.id == alert.id).execute(self.tx.db)
        alert.__data__.update(changes)
        self.tx.note(_ALERT_QUEUED)
        return alert

    def delete_alert(self, tenant_id, alert_id, now):
        """Delete the alert `alert_id` of `tenant_id` (or `ALL_TENANTS`); returns it (None if
        there is none). AlertBusy while it is being delivered."""
        alert = self._load_changeable(tenant_id, alert_id, now)
        if alert is not None:
            AlertQueueItem.delete().where(AlertQueueItem.id == alert.id).execute(self.tx.db)
        return alert

    def purge_old_alerts(self, cutoff, statuses, limit=None):
        """Delete alerts created before `cutoff` whose status is in `statuses`; count.

        With `limit`, at most that many (oldest first), so a caller can purge in steps.
        """
        self.tx.require_open()
        if not statuses:
            return 0
        condition = (AlertQueueItem.created_at < cutoff) & AlertQueueItem.status.in_(statuses)
        if limit is not None:
            chosen = (AlertQueueItem.select(AlertQueueItem.id).where(condition)
                      .order_by(AlertQueueItem.created_at).limit(limit))
            # the status and age again: on PostgreSQL a row revived meanwhile must not go
            condition = AlertQueueItem.id.in_(chosen) & condition
        return AlertQueueItem.delete().where(condition).execute(self.tx.db)


class AlertDriver(AlertQueueWriter, AlertQueueReader):
    """The seed's one-object driver: `AlertDriver(tx)`, every queue write and read, on the
    transaction's database."""

    ACCESS = "READ+WRITE"

    def __init__(self, tx):
        super().__init__(tx)
        self.db = self.tx.db  # what the reads run on


def get_alert_driver(tx):
    """The seed's name for the alert driver: an `AlertDriver` on transaction `tx`."""
    return AlertDriver(tx)


def delete_old_alerts(coordinator, cutoff, statuses, step=PURGE_STEP, on_step=None):
    """Delete alerts created before `cutoff` whose status is in `statuses`, at most `step` (a
    positive integer) per coordinator transaction, so senders are never held up for long;
    returns how many were deleted. `on_step(count)` is called after each step (e.g. to move a
    progress bar)."""
    require_int(step, "step", 1)
    deleted = 0
    while True:
        with coordinator.transaction() as tx:
            count = AlertQueueWriter(tx).purge_old_alerts(cutoff, statuses, limit=step)
        deleted += count
        if on_step:
            on_step(count)
        if count < step:
            return deleted
