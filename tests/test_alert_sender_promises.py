"""The alert sender's and the alert queue's security and reliability promises (README
"Guarantees"), against real servers on 127.0.0.1; each test is named after its promise."""
import threading
from datetime import timedelta

import pytest

from hoc_drivers.alert_driver import AlertDriver, AlertQueueReader
from hoc_drivers.alert_sender import LEASE_MARGIN_SECONDS, AlertDelivery, AlertSender, SmtpSettings
from hoc_drivers.models.alerts import AlertQueueItem
from hoc_drivers.models.base import new_id
from hoc_drivers.testing import refuse_writes
from tests.test_alert_sender import (HTTP_OK, T0, TrickleReceiver,
                                     alert_rows)


def queue_alert(coordinator, channel="webhook", destination=None, payload=None, **fields):
    with coordinator.transaction() as tx:
        return AlertDriver(tx).insert_alert(None, payload or {"n": 1}, "test", channel=channel,
                                            destination=destination, **fields)


def queue_email(coordinator, *recipients):
    return queue_alert(coordinator, "email", {"recipients": list(recipients)},
                       {"subject": "s", "body": "b"})


def smtp_sender(coordinator, server, **settings):
    smtp = SmtpSettings(host="127.0.0.1", port=server.server_address[1], **settings)
    return AlertSender(coordinator, AlertDelivery(timeout=5, smtp=smtp))


@pytest.mark.parametrize("smtp_server", [{"extensions": ["AUTH PLAIN LOGIN"]}], indirect=True)
def test_smtp_credentials_are_never_sent_without_starttls(hoc_coordinator, smtp_server):
    queue_email(hoc_coordinator, "ops@example.com")
    sender = smtp_sender(hoc_coordinator, smtp_server, username="alerts", password="hunter2")
    assert sender.process_batch()["retried"] == 1
    assert not any(c.upper().startswith("AUTH") for c in smtp_server.commands)
    assert "hunter2" not in " ".join(smtp_server.commands) and smtp_server.messages == []
    (row,) = alert_rows(hoc_coordinator.db)
    assert (row.status, row.last_error) == ("pending", "refusing to send SMTP credentials without STARTTLS")


def test_without_credentials_mail_goes_out_without_starttls(hoc_coordinator, smtp_server):
    queue_email(hoc_coordinator, "ops@example.com")
    assert smtp_sender(hoc_coordinator, smtp_server).process_batch()["sent"] == 1
    assert [recipients for _, recipients, _ in smtp_server.messages] == [["ops@example.com"]]


@pytest.mark.parametrize("smtp_server", [{"refuse": {"gone@example.com"}}], indirect=True)
def test_refused_recipients_are_not_reported_sent(hoc_coordinator, smtp_server):
    queue_email(hoc_coordinator, "ops@example.com", "gone@example.com")
    counts = smtp_sender(hoc_coordinator, smtp_server).process_batch()
    assert (counts["sent"], counts["retried"]) == (0, 1)
    (row,) = alert_rows(hoc_coordinator.db)
    assert (row.status, row.sent_at) == ("pending", None)
    assert row.last_error == 'recipients refused: ["gone@example.com"]'


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://127.0.0.1/hook", "gopher://127.0.0.1/",
                                 "http:///no-host", "http://127.0.0.1/a b", "javascript:alert(1)"])
def test_a_destination_that_is_not_an_http_url_is_failed_at_once_never_delivered_or_retried(
        hoc_coordinator, url):
    queue_alert(hoc_coordinator, destination={"url": url}, max_attempts=5)
    counts = AlertSender(hoc_coordinator).process_batch()
    assert (counts["failed"], counts["retried"], counts["sent"]) == (1, 0, 0)
    (row,) = alert_rows(hoc_coordinator.db)
    assert (row.status, row.attempts) == ("failed", 1)
    assert row.last_error == f"destination url must be an http(s) URL, got {url!r}"


def test_the_webhook_request_line_is_exactly_the_destination_path(hoc_coordinator, receiver):
    queue_alert(hoc_coordinator, destination={"url": receiver.url + "/hooks/a?x=1"})
    assert AlertSender(hoc_coordinator).process_batch()["sent"] == 1
    assert receiver.request_lines == ["POST /hooks/a?x=1 HTTP/1.1"]


def test_the_test_receiver_keeps_a_double_slash_it_was_sent(hoc_coordinator, receiver):
    """The receiver shows what was really sent: a malformed `//` path is not tidied away."""
    queue_alert(hoc_coordinator, destination={"url": receiver.url + "//twice"})
    assert AlertSender(hoc_coordinator).process_batch()["sent"] == 1
    assert receiver.request_lines == ["POST //twice HTTP/1.1"]
    assert receiver.requests[0][0] == "//twice"


def test_a_claim_outlasts_the_delivery_deadline_plus_its_margin(hoc_coordinator, receiver):
    """While one sender delivers, no other sender can claim the alert until its deadline and
    the margin to record the outcome have both passed."""
    now = [T0]
    queue_alert(hoc_coordinator, destination={"url": receiver.url}, now=T0)
    first, second = (AlertSender(hoc_coordinator, AlertDelivery(timeout=2), batch_size=1,
                                 clock=lambda: now[0]) for _ in range(2))
    claims = []

    def another_sender_tries_just_before_the_lease_ends():
        now[0] = T0 + timedelta(seconds=2 + LEASE_MARGIN_SECONDS - 0.001)
        claims.append(second.process_batch()["processed"])

    receiver.on_request = another_sender_tries_just_before_the_lease_ends
    assert first.process_batch()["sent"] == 1
    assert claims == [0] and len(receiver.requests) == 1
    (row,) = alert_rows(hoc_coordinator.db)
    assert row.status == "sent"


def test_a_receiver_that_answers_after_the_deadline_receives_the_alert_again_on_the_retry(
        hoc_coordinator):
    now = [T0]
    with TrickleReceiver(HTTP_OK) as trickle:   # takes the body, answers too slowly
        queue_alert(hoc_coordinator, destination={"url": trickle.url}, now=T0)
        sender = AlertSender(hoc_coordinator, AlertDelivery(timeout=0.3), clock=lambda: now[0])
        assert sender.process_batch()["retried"] == 1
        now[0] += timedelta(seconds=2)          # the first backoff
        assert sender.process_batch()["retried"] == 1
    assert len(trickle.bodies) == 2 and trickle.bodies[0] == trickle.bodies[1]  # at least once


def test_a_lease_is_refused_unless_positive(hoc_coordinator):
    queue_alert(hoc_coordinator, now=T0)
    for lease in (0, -1):
        with pytest.raises(ValueError, match="lease_seconds must be positive"):
            with hoc_coordinator.transaction() as tx:
                AlertDriver(tx).fetch_pending_alerts(T0, 10, lease_seconds=lease)
    (row,) = alert_rows(hoc_coordinator.db)
    assert (row.claim_token, row.next_attempt_at) == (None, T0)


def insert_raw(tx, **fields):
    AlertQueueItem.insert(id=new_id(), payload={}, alert_type="test", channel="webhook",
                          **fields).execute(tx.db)


def test_next_due_at_ignores_alerts_that_can_never_be_claimed(hoc_coordinator):
    """An alert with its attempts used up (or not pending) never falls due: a sender waiting
    for it would wake at once, forever."""
    with hoc_coordinator.transaction() as tx:
        insert_raw(tx, status="pending", attempts=3, max_attempts=3, next_attempt_at=T0)
        insert_raw(tx, status="failed", attempts=1, max_attempts=3, next_attempt_at=T0)
        insert_raw(tx, status="sent", attempts=1, max_attempts=3, next_attempt_at=T0)
    reader = AlertQueueReader(hoc_coordinator.db)
    assert reader.next_due_at() is None
    with hoc_coordinator.transaction() as tx:
        insert_raw(tx, status="pending", attempts=2, max_attempts=3, next_attempt_at=T0 + timedelta(minutes=9))
        insert_raw(tx, status="pending", attempts=0, max_attempts=3, next_attempt_at=T0 + timedelta(minutes=5))
    assert reader.next_due_at() == T0 + timedelta(minutes=5)
    sender = AlertSender(hoc_coordinator, clock=lambda: T0)
    assert sender._seconds_until_due(3600) == 300


def test_alerts_are_listed_newest_first_and_purged_oldest_first(hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        for minute in (2, 0, 1):
            AlertDriver(tx).insert_alert("acme", {"m": minute}, "test", now=T0 + timedelta(minutes=minute))
        AlertQueueItem.update(status="sent").execute(tx.db)
    reader = AlertQueueReader(hoc_coordinator.db)
    assert [a.payload["m"] for a in reader.list_alerts("acme")] == [2, 1, 0]
    assert [a.payload["m"] for a in reader.list_alerts("acme", limit=2, offset=1)] == [1, 0]
    with hoc_coordinator.transaction() as tx:
        assert AlertDriver(tx).purge_old_alerts(T0 + timedelta(hours=1), ["sent"], limit=2) == 2
    assert [a.payload["m"] for a in alert_rows(hoc_coordinator.db)] == [2]


class CountingSender(AlertSender):
    """Counts the batches `serve` claims; says when it has claimed `expected` of them."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches = 0
        self.reached = {}
        self.lock = threading.Lock()

    def process_batch(self, batch_size=None):
        counts = super().process_batch(batch_size)
        with self.lock:
            self.batches += 1
            self.reached.setdefault(self.batches, threading.Event()).set()
        return counts

    def wait_for(self, batches, timeout):
        with self.lock:
            event = self.reached.setdefault(batches, threading.Event())
        return event.wait(timeout)


def serving(sender):
    thread = threading.Thread(target=sender.serve, kwargs={"poll_seconds": 3600})
    thread.start()
    return thread


def test_a_serving_sender_goes_back_to_waiting_after_a_wake(hoc_coordinator):
    """A wake is used once: serve() clears it, drains, and waits again (no busy loop)."""
    sender = CountingSender(hoc_coordinator)
    thread = serving(sender)
    try:
        assert sender.wait_for(1, 20)          # the first drain: nothing queued, one batch
        sender.wake()
        assert sender.wait_for(2, 20)          # the wake: one more drain
        assert not sender.wait_for(3, 0.5)     # then it waits (for the 3600 s poll)
    finally:
        sender.stop()
        thread.join(20)
    assert not thread.is_alive() and sender.batches == 2


def test_a_serving_sender_waits_the_poll_after_a_database_error(hoc_coordinator):
    """A claim that fails is not retried at once, even with an alert due right now."""
    queue_alert(hoc_coordinator)
    with hoc_coordinator.transaction() as tx:  # reading still works; claiming fails
        refuse_writes(tx, "costsim_alert_queue", "claims refused", event="UPDATE")
    sender = CountingSender(hoc_coordinator)
    thread = serving(sender)
    try:
        assert sender.wait_for(1, 20)
        assert not sender.wait_for(2, 0.5)
    finally:
        sender.stop()
        thread.join(20)
    assert not thread.is_alive() and sender.batches == 1
