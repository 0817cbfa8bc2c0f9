"""The alert sender against real servers on 127.0.0.1: webhook, Slack-style, Alertmanager, SMTP."""
import hashlib
import hmac
import json
import logging
import socket
import socketserver
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from freezegun import freeze_time

from hoc_drivers.alert_driver import AlertDriver, AlertQueueReader, delete_old_alerts
from hoc_drivers.alert_emitter import AlertConfig, AlertEmitter, ThresholdSignal
from hoc_drivers.alert_sender import (AlertDelivery, AlertSender, SmtpSettings,
                                      backoff_seconds)
from hoc_drivers.db import open_database
from hoc_drivers.guard_cache import GuardCache
from hoc_drivers.models.alerts import AlertQueueItem
from hoc_drivers.models.base import new_id
from hoc_drivers.models.runs import Incident
from hoc_drivers.testing import ManualClock
from hoc_drivers.transaction_coordinator import TransactionCoordinator

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=timezone.utc)
SECRET = "webhook-signing-secret"
REPO = Path(__file__).resolve().parent.parent


class HttpReceiver:
    """A real HTTP server on 127.0.0.1 that records each POST; can go down and come back.

    Each request is kept as (raw request target, headers, body): the target exactly as the
    request line sent it (`BaseHTTPRequestHandler.path` turns a leading `//` into `/`, which
    would hide a malformed URL), and the whole raw request line in `request_lines`.
    """

    def __init__(self, status=200):
        self.status = status
        self.body = b"ok"  # the reply's body
        self.on_request = None  # called as each request arrives, before the reply
        self.requests = []
        self.request_lines = []
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.server = None
        self.port = self._serve(0)

    def _serve(self, port):
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.requests.append((self.requestline.split(" ")[1], dict(self.headers), body))
                    receiver.request_lines.append(self.requestline)
                    receiver.arrived.notify_all()
                if receiver.on_request:
                    receiver.on_request()
                self.send_response(receiver.status)
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self.server.server_address[1]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def wait_for(self, count, timeout=20):
        """True once `count` requests have arrived (False if they do not within `timeout` s)."""
        with self.arrived:
            return self.arrived.wait_for(lambda: len(self.requests) >= count, timeout)

    def down(self):
        self.server.shutdown()
        self.server.server_close()

    def up(self):
        self._serve(self.port)


class SmtpReceiver(socketserver.ThreadingTCPServer):
    """A minimal real SMTP server on 127.0.0.1: EHLO, MAIL, RCPT, DATA, QUIT; keeps messages
    and every command line received (`commands`). `extensions` are advertised after EHLO
    (e.g. "AUTH PLAIN", accepted whatever the credentials); RCPT of an address in `refuse`
    gets 550."""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, extensions=(), refuse=()):
        self.messages = []
        self.commands = []
        self.extensions, self.refuse = list(extensions), set(refuse)
        super().__init__(("127.0.0.1", 0), _SmtpSession)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()


class _SmtpSession(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self):
        self.reply("220 test SMTP ready")
        sender, recipients = None, []
        for raw in self.rfile:
            command = raw.decode().strip()
            self.server.commands.append(command)
            verb = command[:4].upper()
            if verb in ("EHLO", "HELO"):
                for extension in self.server.extensions:
                    self.reply("250-" + extension)
                self.reply("250 test")
            elif verb == "AUTH":
                self.reply("235 accepted")
            elif verb == "MAIL":
                sender, recipients = command.split(":", 1)[1].strip(), []
                self.reply("250 OK")
            elif verb == "RCPT":
                address = command.split(":", 1)[1].strip().strip("<>")
                if address in self.server.refuse:
                    self.reply("550 no such mailbox")
                    continue
                recipients.append(address)
                self.reply("250 OK")
            elif verb == "DATA":
                self.reply("354 end with .")
                lines = []
                for line in self.rfile:
                    if line in (b".\r\n", b".\n"):
                        break
                    lines.append(line[1:] if line.startswith(b"..") else line)
                self.server.messages.append((sender, recipients, b"".join(lines)))
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 OK")


class TrickleReceiver(socketserver.ThreadingTCPServer):
    """A real server on 127.0.0.1 that sends `answer` one byte every `pause` s (a receiver that
    holds a delivery hostage); with `http`, it first reads one HTTP request into `bodies`."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, answer, http=True, pause=0.05):
        self.answer, self.http, self.pause = answer, http, pause
        self.bodies = []
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), _TrickleSession)
        self.url = f"http://127.0.0.1:{self.server_address[1]}/"
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def __exit__(self, *exc_info):
        self.stopping.set()
        self.shutdown()
        super().__exit__(*exc_info)


class _TrickleSession(socketserver.StreamRequestHandler):
    def handle(self):
        if self.server.http:
            length = 0
            for line in self.rfile:
                if line == b"\r\n":
                    break
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            self.server.bodies.append(self.rfile.read(length))
        for byte in self.server.answer:
            if self.server.stopping.wait(self.server.pause):
                return
            try:
                self.wfile.write(bytes([byte]))
            except OSError:
                return  # the sender gave up


HTTP_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"  # 40 bytes: 2 s at 0.05 s a byte


@pytest.fixture
def shared_cache(hoc_db):
    return GuardCache(timer=ManualClock()).serve(hoc_db)


def emit_breach(coordinator, cfg, **fields):
    sig = ThresholdSignal(**{"tenant_id": cfg.tenant_id, "run_id": "run-1",
                             "policy_id": cfg.policy_id, "metric": "cost", "current_value": 120,
                             "threshold_value": 100, "signal_type": "breach",
                             "timestamp": T0, **fields})
    with coordinator.transaction() as tx:
        assert AlertEmitter(tx).emit_breach(sig, cfg, "stop")
    return sig


def webhook_config(url, **fields):
    return AlertConfig(policy_id="budget", tenant_id="acme", enabled_channels=["webhook"],
                       webhook_url=url, **fields)


def alert_rows(db):
    return list(AlertQueueItem.select().order_by(AlertQueueItem.created_at).execute(db))


def test_backoff_doubles_up_to_the_cap():
    assert [backoff_seconds(n) for n in range(1, 11)] == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert backoff_seconds(3, max_backoff_seconds=5) == 5


def test_webhook_body_and_signature_verified_by_the_receiver(hoc_coordinator, receiver):
    sig = emit_breach(hoc_coordinator, webhook_config(receiver.url + "/hook", webhook_secret=SECRET))
    counts = AlertSender(hoc_coordinator).process_batch()
    assert counts == {"processed": 1, "sent": 1, "retried": 0, "failed": 0, "lost": 0, "errors": 0}
    ((path, headers, body),) = receiver.requests
    assert path == "/hook" and headers["Content-Type"] == "application/json"
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Signature"], expected)
    assert SECRET not in body.decode() and SECRET not in json.dumps(headers)
    payload = json.loads(body)
    assert payload["event_type"] == "threshold_breach"
    assert (payload["signal_id"], payload["action_taken"], payload["percentage"]) == (sig.signal_id, "stop", 120.0)
    (row,) = alert_rows(hoc_coordinator.db)
    assert row.status == "sent" and row.sent_at is not None


def test_server_down_retries_with_growing_delays_then_delivers_once(hoc_coordinator, receiver):
    receiver.down()
    with freeze_time(T0) as clock:
        emit_breach(hoc_coordinator, webhook_config(receiver.url, webhook_secret=SECRET))
        sender = AlertSender(hoc_coordinator, AlertDelivery(timeout=2))
        delays = []
        for _ in range(3):
            assert sender.process_batch()["retried"] == 1
            (row,) = alert_rows(hoc_coordinator.db)
            delays.append((row.next_attempt_at - row.last_attempt_at).total_seconds())
            assert sender.process_batch()["processed"] == 0      # not due yet
            clock.tick(delays[-1])
        assert delays == [2.0, 4.0, 8.0]
        assert "Connection refused" in alert_rows(hoc_coordinator.db)[0].last_error
        receiver.up()
        assert sender.process_batch()["sent"] == 1
        clock.tick(600)
        assert sender.drain()["processed"] == 0
    assert len(receiver.requests) == 1
    (row,) = alert_rows(hoc_coordinator.db)
    assert (row.status, row.attempts) == ("sent", 3)


def test_max_attempts_then_failed_in_stats_then_retry_failed_revives(hoc_coordinator, receiver):
    receiver.down()
    with freeze_time(T0) as clock:
        with hoc_coordinator.transaction() as tx:
            AlertDriver(tx).insert_alert(None, {"text": "hi"}, "test", channel="slack",
                                         destination={"url": receiver.url}, max_attempts=10)
        sender = AlertSender(hoc_coordinator, AlertDelivery(timeout=2))
        delays = []
        for attempt in range(1, 11):
            counts = sender.process_batch()
            (row,) = alert_rows(hoc_coordinator.db)
            if attempt < 10:
                assert counts["retried"] == 1
                delays.append((row.next_attempt_at - row.last_attempt_at).total_seconds())
                clock.tick(delays[-1])
            else:
                assert counts["failed"] == 1
        assert delays == [2, 4, 8, 16, 32, 64, 128, 256, 300]
        stats = AlertQueueReader(hoc_coordinator.db).fetch_queue_stats()
        assert (stats["pending"], stats["failed"]) == (0, 1)
        clock.tick(3600)
        assert sender.process_batch()["processed"] == 0
        receiver.up()
        with hoc_coordinator.transaction() as tx:
            assert AlertDriver(tx).retry_failed_alerts(3, clock().replace(tzinfo=timezone.utc)) == 1
        assert sender.process_batch()["sent"] == 1
    (row,) = alert_rows(hoc_coordinator.db)
    assert (row.status, row.attempts, row.max_attempts) == ("sent", 10, 13)
    assert len(receiver.requests) == 1


def test_http_errors_and_redirects_are_retried_not_followed(hoc_coordinator, receiver):
    emit_breach(hoc_coordinator, webhook_config(receiver.url))
    receiver.status = 503
    assert AlertSender(hoc_coordinator).process_batch()["retried"] == 1
    assert alert_rows(hoc_coordinator.db)[0].last_error == "HTTP 503: ok"
    receiver.status = 302
    with freeze_time(datetime.now(timezone.utc) + timedelta(seconds=10)):
        assert AlertSender(hoc_coordinator).process_batch()["retried"] == 1
    assert alert_rows(hoc_coordinator.db)[0].last_error.startswith("HTTP 302")


def test_delivery_has_a_timeout():
    silent = socket.create_server(("127.0.0.1", 0))       # accepts connections, never answers
    try:
        alert = AlertQueueItem(channel="webhook", payload={"a": 1},
                               destination={"url": f"http://127.0.0.1:{silent.getsockname()[1]}/"})
        result = AlertDelivery(timeout=0.2).deliver(alert)
    finally:
        silent.close()
    assert (result.success, result.error_type) == (False, "timeout")


@pytest.mark.parametrize("channel", ["webhook", "email"])
def test_a_trickling_receiver_is_abandoned_at_the_deadline_and_retried(hoc_coordinator, channel):
    # each byte comes well within any per-read timeout: only a whole-delivery deadline ends it
    http = channel == "webhook"
    with TrickleReceiver(HTTP_OK if http else b"220 trickle SMTP ready\r\n", http=http) as trickle:
        with hoc_coordinator.transaction() as tx:
            AlertDriver(tx).insert_alert(
                None, {"n": 1} if http else {"subject": "s", "body": "b"}, "test", channel=channel,
                destination={"url": trickle.url} if http else {"recipients": ["ops@example.com"]})
        delivery = AlertDelivery(timeout=0.3, smtp=SmtpSettings(host="127.0.0.1",
                                                                port=trickle.server_address[1]))
        started = time.monotonic()
        counts = AlertSender(hoc_coordinator, delivery).process_batch()
        elapsed = time.monotonic() - started
    assert counts["retried"] == 1 and elapsed < 1.0      # the whole trickle takes 1.2 s (SMTP), 2 s
    (row,) = alert_rows(hoc_coordinator.db)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "delivery deadline of 0.3 s passed")


def test_two_senders_and_a_trickling_receiver_deliver_the_alert_once(hoc_coordinator):
    now = [T0]
    with TrickleReceiver(HTTP_OK) as trickle:
        with hoc_coordinator.transaction() as tx:
            AlertDriver(tx).insert_alert(None, {"n": 1}, "test", channel="webhook",
                                         destination={"url": trickle.url}, max_attempts=1, now=T0)
        first, second = (AlertSender(hoc_coordinator, AlertDelivery(timeout=0.3), batch_size=1,
                                     clock=lambda: now[0]) for _ in range(2))
        delivering = threading.Thread(target=first.process_batch)
        delivering.start()
        delivering.join(1.5)            # the deadline ends it after 0.3 s; the trickle takes 2 s
        now[0] += timedelta(seconds=first.lease_seconds)  # the first sender's lease has passed
        assert second.process_batch()["processed"] == 0
    delivering.join(5)
    assert len(trickle.bodies) == 1
    (row,) = alert_rows(hoc_coordinator.db)
    assert (row.status, row.last_error) == ("failed", "delivery deadline of 0.3 s passed")


def test_no_delivery_starts_once_the_lease_cannot_cover_its_deadline(hoc_coordinator, receiver):
    now = [T0]
    with hoc_coordinator.transaction() as tx:
        for n in (1, 2):
            AlertDriver(tx).insert_alert(None, {"n": n}, "test", channel="webhook",
                                         destination={"url": receiver.url}, now=T0)
    sender = AlertSender(hoc_coordinator, AlertDelivery(timeout=2), batch_size=2,
                         clock=lambda: now[0])
    lease_ends = T0 + timedelta(seconds=sender.lease_seconds)
    # the first delivery leaves 1 s of the batch's lease: less than the 2 s deadline
    receiver.on_request = lambda: now.__setitem__(0, lease_ends - timedelta(seconds=1))
    assert sender.process_batch() == {"processed": 1, "sent": 1, "retried": 0, "failed": 0,
                                      "lost": 0, "errors": 0}
    assert len(receiver.requests) == 1
    (left,) = [row for row in alert_rows(hoc_coordinator.db) if row.status == "pending"]
    assert (left.attempts, left.next_attempt_at) == (0, lease_ends)   # untouched, still leased
    receiver.on_request, now[0] = None, lease_ends
    assert sender.process_batch()["sent"] == 1
    assert sorted(json.loads(body)["n"] for _, _, body in receiver.requests) == [1, 2]


def test_an_outcome_whose_claim_was_taken_over_changes_nothing_and_is_logged(
        hoc_coordinator, receiver, caplog):
    now = [T0]
    with hoc_coordinator.transaction() as tx:
        AlertDriver(tx).insert_alert(None, {"n": 1}, "test", channel="webhook",
                                     destination={"url": receiver.url}, now=T0)
    sender = AlertSender(hoc_coordinator, AlertDelivery(timeout=2), clock=lambda: now[0])
    taken = []

    def lease_lapses_and_another_sender_claims():
        now[0] = T0 + timedelta(seconds=sender.lease_seconds)
        with hoc_coordinator.transaction() as tx:
            taken.extend(AlertDriver(tx).fetch_pending_alerts(now[0], 1, 60))

    receiver.on_request = lease_lapses_and_another_sender_claims
    with caplog.at_level(logging.WARNING, logger="hoc_drivers.alert_sender"):
        counts = sender.process_batch()
    assert (counts["processed"], counts["sent"], counts["lost"]) == (1, 0, 1)
    (row,) = alert_rows(hoc_coordinator.db)
    assert (row.status, row.sent_at, row.attempts, row.claim_token) == \
        ("pending", None, 0, taken[0].claim_token)
    assert f"outcome of alert {row.id} (sent) not recorded" in caplog.text


def test_alertmanager_alert_marks_its_incident_and_refreshes_the_guard_cache(
        hoc_coordinator, receiver, shared_cache):
    with hoc_coordinator.transaction() as tx:
        Incident.insert(id="inc-1", tenant_id="acme", title="breaker tripped", severity="high",
                        trigger_type="cost_anomaly").execute(tx.db)
        AlertDriver(tx).insert_alert("acme", [{"labels": {"alertname": "CostSimV2Disabled"}}],
                                     "disable", "costsim_v2", "inc-1")
    shared_cache.set_incidents("acme", {"stale": True})
    sender = AlertSender(hoc_coordinator, AlertDelivery(alertmanager_url=receiver.url + "/"))
    assert sender.process_batch()["sent"] == 1
    ((path, _, body),) = receiver.requests
    assert path == "/api/v2/alerts"      # the raw target: no "//" from the URL's trailing "/"
    assert receiver.request_lines == ["POST /api/v2/alerts HTTP/1.1"]
    assert json.loads(body)[0]["labels"]["alertname"] == "CostSimV2Disabled"
    assert Incident.select().where(Incident.id == "inc-1").get(hoc_coordinator.db).alert_sent is True
    assert shared_cache.get_incidents("acme") is None


def test_an_alert_without_a_destination_fails_at_once_and_shows_in_stats(
        hoc_coordinator, monkeypatch):
    monkeypatch.delenv("ALERTMANAGER_URL", raising=False)
    with hoc_coordinator.transaction() as tx:
        AlertDriver(tx).insert_alert(None, [{"labels": {}}], "enable")
    assert AlertSender(hoc_coordinator).process_batch()["failed"] == 1
    (row,) = alert_rows(hoc_coordinator.db)
    assert (row.status, row.last_error) == ("failed", "no destination configured")
    assert AlertQueueReader(hoc_coordinator.db).fetch_queue_stats()["failed"] == 1


def test_email_goes_through_a_real_smtp_server(hoc_coordinator):
    smtp = SmtpReceiver()
    try:
        cfg = AlertConfig(policy_id="budget", tenant_id="acme", enabled_channels=["email"],
                          email_recipients=["ops@example.com", "cfo@example.com"])
        emit_breach(hoc_coordinator, cfg)
        settings = SmtpSettings(host="127.0.0.1", port=smtp.server_address[1],
                                from_address="alerts@example.com")
        counts = AlertSender(hoc_coordinator, AlertDelivery(timeout=5, smtp=settings)).process_batch()
    finally:
        smtp.shutdown()
        smtp.server_close()
    assert counts["sent"] == 1
    ((sender, recipients, data),) = smtp.messages
    assert sender == "<alerts@example.com>"
    assert recipients == ["ops@example.com", "cfo@example.com"]
    message = message_from_bytes(data)
    assert message["Subject"] == "[AOS Alert] BREACH: cost"
    assert "Action Taken: stop" in message.get_payload()


def test_smtp_server_down_is_a_retry(hoc_coordinator):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    cfg = AlertConfig(policy_id="budget", tenant_id="acme", enabled_channels=["email"],
                      email_recipients=["ops@example.com"])
    emit_breach(hoc_coordinator, cfg)
    delivery = AlertDelivery(timeout=2, smtp=SmtpSettings(host="127.0.0.1", port=port))
    assert AlertSender(hoc_coordinator, delivery).process_batch()["retried"] == 1
    assert alert_rows(hoc_coordinator.db)[0].last_error


def test_purge_old_alerts_deletes_in_steps_of_one_transaction_each(hoc_coordinator):
    with hoc_coordinator.transaction() as tx:
        for n in range(5):
            AlertDriver(tx).insert_alert(None, {"n": n}, "test", now=T0)
        AlertQueueItem.update(status="sent").execute(tx.db)
    steps = []
    assert delete_old_alerts(hoc_coordinator, T0 + timedelta(seconds=1), ["sent"], step=2,
                             on_step=steps.append) == 5
    assert steps == [2, 2, 1] and alert_rows(hoc_coordinator.db) == []
    with pytest.raises(ValueError, match="step must be a positive integer"):
        delete_old_alerts(hoc_coordinator, T0, ["sent"], step=0)

def test_the_sender_never_raises_into_its_caller(tmp_path):
    bare = open_database(str(tmp_path / "no-tables.db"))        # the queue table is missing
    counts = AlertSender(TransactionCoordinator(bare)).process_batch()
    assert counts["errors"] == 1 and counts["processed"] == 0
    assert AlertSender(TransactionCoordinator(bare)).drain()["errors"] == 1
    bare.close()


@pytest.mark.reliability
def test_two_sender_processes_deliver_each_of_1000_alerts_exactly_once(hoc_db, receiver):
    coordinator = TransactionCoordinator(hoc_db)
    with coordinator.transaction() as tx:
        AlertQueueItem.insert_many(
            [{"id": new_id(), "payload": {"n": n}, "alert_type": "test", "channel": "webhook",
              "destination": {"url": receiver.url}} for n in range(1000)]).execute(tx.db)
    command = [sys.executable, "-c", "import cli; cli.main()", "--db", hoc_db.database,
               "alerts", "send", "--batch", "20", "--json"]
    senders = [subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(2)]
    outputs = [sender.communicate(timeout=120) for sender in senders]
    assert [sender.returncode for sender in senders] == [0, 0], outputs
    sent = [json.loads(out)["sent"] for out, _ in outputs]
    delivered = sorted(json.loads(body)["n"] for _, _, body in receiver.requests)
    assert delivered == list(range(1000))
    assert sum(sent) == 1000 and min(sent) > 0       # both senders really shared the queue
    stats = AlertQueueReader(hoc_db).fetch_queue_stats()
    assert (stats["pending"], stats["sent"], stats["failed"]) == (0, 1000, 0)


# ------------------------------------------------------------------ a sender that keeps running


def _serve_in_thread(sender, **options):
    result = {}
    thread = threading.Thread(target=lambda: result.update(sender.serve(**options)))
    thread.start()
    return thread, result


class WatchedSender(AlertSender):
    """Says when `serve` has looked at the queue and is about to wait."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.waiting = threading.Event()

    def _seconds_until_due(self, poll_seconds):
        seconds = super()._seconds_until_due(poll_seconds)
        self.waiting.set()
        return seconds


def test_a_serving_sender_is_woken_by_the_commit_that_queues_an_alert(hoc_coordinator, receiver):
    sender = WatchedSender(hoc_coordinator)
    thread, totals = _serve_in_thread(sender, poll_seconds=3600)  # only a wake can explain it
    try:
        assert sender.waiting.wait(20)
        sender.waiting.clear()
        emit_breach(hoc_coordinator, webhook_config(receiver.url, webhook_secret=SECRET))
        assert receiver.wait_for(1)
        assert sender.waiting.wait(20)
        with hoc_coordinator.transaction() as tx:  # a failed alert, written without waking anyone
            AlertQueueItem.insert(id=new_id(), payload={"n": 2}, alert_type="test",
                                  channel="webhook", destination={"url": receiver.url},
                                  status="failed", attempts=1, max_attempts=1).execute(tx.db)
        with hoc_coordinator.transaction() as tx:  # reviving it wakes the sender
            assert AlertDriver(tx).retry_failed_alerts(1, datetime.now(timezone.utc)) == 1
        assert receiver.wait_for(2)
    finally:
        sender.stop()
        thread.join(20)
    assert not thread.is_alive()
    assert (totals["sent"], totals["errors"]) == (2, 0)


def test_a_serving_sender_waits_for_the_retry_then_delivers(hoc_coordinator, receiver):
    now = [datetime.now(timezone.utc) + timedelta(seconds=1)]
    receiver.down()
    emit_breach(hoc_coordinator, webhook_config(receiver.url))
    retried = threading.Event()
    sender = AlertSender(hoc_coordinator, AlertDelivery(timeout=2), clock=lambda: now[0])
    thread, totals = _serve_in_thread(
        sender, poll_seconds=3600, on_batch=lambda c: c["retried"] and retried.set())
    try:
        assert retried.wait(20)
        assert sender._seconds_until_due(3600) == 2.0  # first retry after 2 s, not the poll
        receiver.up()
        now[0] += timedelta(seconds=2)
        sender.wake()
        assert receiver.wait_for(1)
    finally:
        sender.stop()
        thread.join(20)
    assert (totals["retried"], totals["sent"]) == (1, 1)


def test_the_wait_is_until_the_next_due_alert_within_the_poll(hoc_coordinator):
    now = [T0]
    sender = AlertSender(hoc_coordinator, clock=lambda: now[0])
    assert sender._seconds_until_due(5) == 5  # nothing queued
    with hoc_coordinator.transaction() as tx:
        AlertDriver(tx).insert_alert(None, {}, "test", now=T0 + timedelta(seconds=10))
    assert sender._seconds_until_due(5) == 5
    assert sender._seconds_until_due(60) == 10
    now[0] = T0 + timedelta(seconds=30)
    assert sender._seconds_until_due(60) == 0
    with pytest.raises(ValueError, match="poll_seconds must be positive"):
        sender.serve(poll_seconds=0)


def test_send_watch_delivers_new_alerts_until_sigterm(hoc_db, receiver):
    import signal

    coordinator = TransactionCoordinator(hoc_db)

    def queue(n):
        with coordinator.transaction() as tx:
            AlertDriver(tx).insert_alert(None, {"n": n}, "test", channel="webhook",
                                         destination={"url": receiver.url})

    queue(1)
    command = [sys.executable, "-c", "import cli; cli.main()", "--db", hoc_db.database,
               "alerts", "send", "--watch", "--poll", "0.2", "--json"]
    watcher = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert receiver.wait_for(1)   # what was queued before it started
        queue(2)                      # queued by another process: found by polling
        assert receiver.wait_for(2)
    finally:
        watcher.send_signal(signal.SIGTERM)
        out, err = watcher.communicate(timeout=20)
    assert watcher.returncode == 0, err
    assert json.loads(out)["sent"] == 2
    assert "sent 1, retried 0, failed 0, errors 0" in err


def test_a_reply_holding_nul_is_recorded_as_a_failed_attempt_not_retried_for_ever(hoc_db, receiver):
    receiver.status, receiver.body = 500, b"oops\x00evil"
    coordinator = TransactionCoordinator(hoc_db)
    with coordinator.transaction() as tx:
        AlertQueueItem.insert(id="a1", payload={}, alert_type="test", channel="webhook",
                              destination={"url": receiver.url}).execute(tx.db)
    assert AlertSender(coordinator).process_batch()["errors"] == 0
    (alert,) = alert_rows(hoc_db)
    assert (alert.status, alert.attempts) == ("pending", 1)
    assert alert.last_error == "HTTP 500: oops\\x00evil"
