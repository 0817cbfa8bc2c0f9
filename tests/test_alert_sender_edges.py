"""The alert sender's edges (issue 18): what `AlertDelivery.deliver` reports for each e-mail
outcome, STARTTLS against a real TLS server on 127.0.0.1 (the certificate is checked, then the
credentials go), and the serve loop's arguments and logs."""
import base64
import logging
import socket
import socketserver
import ssl
import subprocess
import threading
from datetime import timedelta

import pytest

from hoc_drivers.alert_driver import ALL_TENANTS, AlertDriver, AlertQueueReader
from hoc_drivers.alert_sender import AlertDelivery, AlertSender, DeliveryResult, SmtpSettings
from hoc_drivers.db import open_database
from hoc_drivers.models.alerts import AlertQueueItem
from hoc_drivers.models.runs import Incident
from hoc_drivers.testing import refuse_writes
from hoc_drivers.transaction_coordinator import TransactionCoordinator
from tests.test_alert_sender import T0, TrickleReceiver


def email(*recipients):
    """An e-mail alert as the sender gets it from the queue."""
    return AlertQueueItem(id="a1", channel="email", payload={"subject": "s", "body": "b"},
                          destination={"recipients": list(recipients)})


def webhook(url, payload=None, **destination):
    """A webhook alert as the sender gets it from the queue."""
    return AlertQueueItem(id="a1", channel="webhook", payload=payload or {"b": 1, "a": [2]},
                          destination={"url": url, **destination} if url else None)


def test_each_http_outcome_is_reported_as_it_happened(receiver, caplog):
    delivery = AlertDelivery(timeout=5)
    assert delivery.deliver(webhook(receiver.url + "/in", headers={"X-Team": "ops"})) == \
        DeliveryResult(True, status_code=200)
    ((target, headers, body),) = receiver.requests
    assert (target, body) == ("/in", b'{"a":[2],"b":1}')  # canonical JSON: sorted keys, no spaces
    assert (headers["Content-Type"], headers["User-Agent"], headers["X-Team"]) == \
        ("application/json", "hoc-drivers-alert-sender/0.1", "ops")
    receiver.status, receiver.body = 503, b"busy " * 60
    assert delivery.deliver(webhook(receiver.url)) == \
        DeliveryResult(False, "http_503", "HTTP 503: " + ("busy " * 40), status_code=503)  # 200 bytes
    assert delivery.deliver(webhook(f"http://127.0.0.1:{closed_port()}/")) == \
        DeliveryResult(False, "connection", "[Errno 111] Connection refused")
    assert delivery.deliver(webhook(None)) == \
        DeliveryResult(False, "configuration", "no destination configured", permanent=True)
    assert delivery.deliver(webhook("file:///etc/passwd")) == DeliveryResult(
        False, "configuration", "destination url must be an http(s) URL, got 'file:///etc/passwd'", permanent=True)
    receiver.body = b"\xff bad utf-8"
    assert delivery.deliver(webhook(receiver.url)).error_message == "HTTP 503: \ufffd bad utf-8"
    receiver.status = 200
    moved = f"HTTP/1.1 302 Found\r\nLocation: {receiver.url}/elsewhere\r\nContent-Length: 2\r\n\r\nno"
    with TrickleReceiver(moved.encode(), pause=0) as redirecting:  # a redirect is not followed
        assert delivery.deliver(webhook(redirecting.url)) == \
            DeliveryResult(False, "http_302", "HTTP 302: no", status_code=302)
    assert len(receiver.requests) == 3
    with TrickleReceiver(b"garbage\r\n", pause=0) as garbage:
        assert delivery.deliver(webhook(garbage.url)) == \
            DeliveryResult(False, "connection", "BadStatusLine: garbage\r\n")
    with TrickleReceiver(b"x" * 600 + b"\r\n", pause=0) as garbage:  # the queue keeps 500 characters
        assert delivery.deliver(webhook(garbage.url)).error_message == "BadStatusLine: " + "x" * 485
    broken = AlertQueueItem(id="a1", channel="email", payload={"body": "no subject"},
                            destination={"recipients": ["ops@example.com"]})
    with caplog.at_level(logging.ERROR, logger="hoc_drivers.alert_sender"):
        assert delivery.deliver(broken) == DeliveryResult(False, "internal", "KeyError: 'subject'")
    assert caplog.messages == ["delivering alert a1 failed unexpectedly"]
    refused = delivery.deliver(webhook(receiver.url, headers={"X-Bad": "a\r\n" * 200}))
    assert (refused.error_type, len(refused.error_message)) == ("internal", 500)  # kept to 500 characters
    amx = AlertQueueItem(id="a2", channel="alertmanager", payload=[{"labels": {}}])
    assert AlertDelivery(alertmanager_url=receiver.url + "/amX/").deliver(amx).status_code == 200
    assert receiver.requests[-1][0] == "/amX/api/v2/alerts"  # only the trailing "/" goes


def deliver(server, alert, **settings):
    smtp = SmtpSettings(host="127.0.0.1", port=server.server_address[1], **settings)
    return AlertDelivery(timeout=5, smtp=smtp).deliver(alert)


def closed_port():
    probe = socket.create_server(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


LONG = [f"{'x' * 60}{n}@example.com" for n in range(10)]  # refused: the error runs past 500 characters


@pytest.mark.parametrize("smtp_server", [{"refuse": ["gone@example.com", *LONG]}], indirect=True)
def test_each_email_outcome_is_reported_as_it_happened(smtp_server):
    assert deliver(smtp_server, email()) == \
        DeliveryResult(False, "configuration", "no e-mail recipients configured", permanent=True)
    assert deliver(smtp_server, email("ops@example.com", "gone@example.com")) == \
        DeliveryResult(False, "smtp", 'recipients refused: ["gone@example.com"]')
    assert deliver(smtp_server, email("gone@example.com")) == DeliveryResult(
        False, "smtp", "{'gone@example.com': (550, b'no such mailbox')}")  # every one refused
    error = deliver(smtp_server, email(*LONG)).error_message
    assert len(error) == 500 and error.startswith("{'" + LONG[0])  # the queue keeps 500 characters
    assert deliver(smtp_server, email("ops@example.com"), username="alerts", password="pw") == \
        DeliveryResult(False, "smtp", "refusing to send SMTP credentials without STARTTLS")
    assert deliver(smtp_server, email("ops@example.com")) == DeliveryResult(True)
    down = SmtpSettings(host="127.0.0.1", port=closed_port())
    assert AlertDelivery(timeout=5, smtp=down).deliver(email("ops@example.com")) == \
        DeliveryResult(False, "connection", "[Errno 111] Connection refused")


def test_mail_goes_to_the_configured_host():
    listener = socket.create_server(("127.0.0.2", 0))  # loopback, yet not where a default host goes
    listener.settimeout(5)
    try:
        smtp = SmtpSettings(host="127.0.0.2", port=listener.getsockname()[1])
        result = AlertDelivery(timeout=0.3, smtp=smtp).deliver(email("ops@example.com"))
        listener.accept()[0].close()  # the sender connected, then waited for a greeting
    finally:
        listener.close()
    assert result.error_type in ("timeout", "smtp")  # no greeting came in time; not refused


@pytest.mark.parametrize("alert", [email("ops@example.com"), webhook("http://127.0.0.1:9/")], ids=["email", "http"])
def test_a_delivery_out_of_time_before_it_connects_is_a_failed_attempt(alert):
    result = AlertDelivery(timeout=1e-6, smtp=SmtpSettings(host="127.0.0.1", port=closed_port())).deliver(alert)
    assert (result.success, result.error_type, result.permanent) == (False, "timeout", False)
    assert result.error in ("Timeout: delivery deadline passed", "delivery deadline of 1e-06 s passed")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """(certificate, key) files of a self-signed certificate for 127.0.0.1."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


class StartTlsReceiver(socketserver.ThreadingTCPServer):
    """A real SMTP server on 127.0.0.1 that offers STARTTLS (with `certificate`) and, once TLS is
    on, AUTH PLAIN; keeps every command line (`commands`) and how many messages came in."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, certificate):
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(*certificate)
        self.commands, self.messages = [], 0
        super().__init__(("127.0.0.1", 0), _StartTlsSession)
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()


class _StartTlsSession(socketserver.StreamRequestHandler):
    def reply(self, line):
        self.wfile.write(line.encode() + b"\r\n")
        self.wfile.flush()

    def handle(self):
        self.reply("220 test SMTP ready")
        tls = False
        while raw := self.rfile.readline():
            command = raw.decode().strip()
            self.server.commands.append(command)
            verb = command[:4].upper()
            if verb == "EHLO":
                self.reply("250-test")  # the greeting line; then the extensions
                self.reply("250 AUTH PLAIN" if tls else "250 STARTTLS")
            elif verb == "STAR":
                self.reply("220 go ahead")
                try:
                    self.connection = self.server.context.wrap_socket(self.connection, server_side=True)
                except (ssl.SSLError, OSError):
                    return  # the client refused our certificate
                self.rfile, self.wfile, tls = self.connection.makefile("rb"), self.connection.makefile("wb"), True
            elif verb == "AUTH":
                self.reply("235 accepted")
            elif verb == "DATA":
                self.reply("354 end with .")
                while self.rfile.readline() not in (b".\r\n", b""):
                    pass
                self.server.messages += 1
                self.reply("250 queued")
            elif verb == "QUIT":
                self.reply("221 bye")
                return
            else:
                self.reply("250 OK")


@pytest.fixture
def tls_server(certificate):
    server = StartTlsReceiver(certificate)
    yield server
    server.shutdown()
    server.server_close()


def test_an_offered_starttls_is_asked_for_before_any_mail(tls_server, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # the system trusts our certificate
    deliver(tls_server, email("ops@example.com"))
    assert tls_server.commands[1] == "STARTTLS"  # right after EHLO, before MAIL
    assert not [c for c in tls_server.commands[:2] if c.startswith("MAIL")]


@pytest.mark.parametrize("password, plain", [("hunter2", "\0alerts\0hunter2"), (None, "\0alerts\0")])
def test_offered_starttls_is_used_and_the_credentials_go_inside_it(tls_server, certificate, monkeypatch,
                                                                    password, plain):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))  # the system trusts our certificate
    assert deliver(tls_server, email("ops@example.com"), username="alerts", password=password) == \
        DeliveryResult(True)
    (auth,) = [c for c in tls_server.commands if c.startswith("AUTH")]
    assert base64.b64decode(auth.split()[-1]).decode() == plain
    assert tls_server.commands.index("STARTTLS") < tls_server.commands.index(auth)
    assert tls_server.messages == 1


def test_starttls_checks_the_servers_certificate(tls_server):
    """A certificate no trusted authority signed: no mail and no credentials go to that server."""
    result = deliver(tls_server, email("ops@example.com"), username="alerts", password="hunter2")
    assert result.success is False and "STARTTLS" in tls_server.commands
    assert tls_server.messages == 0 and not any(c.startswith("AUTH") for c in tls_server.commands)


def test_serve_takes_any_positive_poll(hoc_coordinator):
    sender = AlertSender(hoc_coordinator)
    with pytest.raises(ValueError, match=r"^poll_seconds must be positive, got 0$"):
        sender.serve(poll_seconds=0)
    sender.stop()  # stopped before it starts: serve() returns at once
    assert sender.serve(poll_seconds=0.5) == dict.fromkeys(
        ("processed", "sent", "retried", "failed", "lost", "errors"), 0)


def test_an_unreadable_queue_is_logged_and_the_sender_waits_the_poll(tmp_path, caplog):
    bare = open_database(str(tmp_path / "no-tables.db"))  # the queue table is missing
    try:
        with caplog.at_level(logging.ERROR, logger="hoc_drivers.alert_sender"):
            sender = AlertSender(TransactionCoordinator(bare))
            assert sender.process_batch()["errors"] == 1
            assert sender._seconds_until_due(7.0) == 7.0
    finally:
        bare.close()
    assert caplog.messages == ["claiming alerts failed", "reading the next due alert failed"]


def queue_webhooks(coordinator, url, count=1, **fields):
    with coordinator.transaction() as tx:
        return [AlertDriver(tx).insert_alert(None, {"n": n}, "test", channel="webhook",
                                             destination={"url": url}, now=T0, **fields)
                for n in range(count)]


def row(coordinator, alert):
    return AlertQueueReader(coordinator.db).get_alert(ALL_TENANTS, alert.id)


def test_each_outcome_of_a_batch_is_recorded_at_the_senders_time(hoc_coordinator, receiver, caplog):
    (ok,) = queue_webhooks(hoc_coordinator, receiver.url + "/ok")
    (busy,) = queue_webhooks(hoc_coordinator, receiver.url + "/busy")
    (last,) = queue_webhooks(hoc_coordinator, receiver.url + "/busy", max_attempts=1)
    (bad,) = queue_webhooks(hoc_coordinator, "ftp://example.com/")
    now = [T0]
    statuses = {"/ok": 200, "/busy": 503}
    receiver.on_request = lambda: setattr(receiver, "status", statuses[receiver.requests[-1][0]])
    sender = AlertSender(hoc_coordinator, AlertDelivery(timeout=2), clock=lambda: now[0],
                         max_backoff_seconds=1)
    with caplog.at_level(logging.INFO, logger="hoc_drivers.alert_sender"):
        assert sender.process_batch() == {"processed": 4, "sent": 1, "retried": 1, "failed": 2, "lost": 0,
                                          "errors": 0}
    assert (row(hoc_coordinator, ok).status, row(hoc_coordinator, ok).sent_at) == ("sent", T0)
    retried = row(hoc_coordinator, busy)
    assert (retried.status, retried.attempts, retried.last_attempt_at, retried.next_attempt_at) == \
        ("pending", 1, T0, T0 + timedelta(seconds=1))  # the backoff's cap
    for failed in (last, bad):
        failed = row(hoc_coordinator, failed)
        assert (failed.status, failed.attempts, failed.last_attempt_at) == ("failed", 1, T0)
    assert f"alert {busy.id} attempt 1 failed (retried): HTTP 503: ok" in caplog.messages
    assert f"alert {bad.id} attempt 1 failed (failed): destination url must be an http(s) URL, " \
           f"got 'ftp://example.com/'" in caplog.messages


def test_a_delivery_starts_while_the_lease_covers_its_whole_deadline(hoc_coordinator, receiver, caplog):
    queue_webhooks(hoc_coordinator, receiver.url, count=3)
    now = [T0]
    sender = AlertSender(hoc_coordinator, AlertDelivery(timeout=2), batch_size=3, clock=lambda: now[0])
    assert sender.lease_seconds == 3 * (2 + 5)
    lease_ends = T0 + timedelta(seconds=sender.lease_seconds)
    # after the first delivery exactly the deadline is left: the second starts, the third does not
    times = [lease_ends - timedelta(seconds=2), lease_ends - timedelta(seconds=1)]
    receiver.on_request = lambda: now.__setitem__(0, times.pop(0))
    with caplog.at_level(logging.WARNING, logger="hoc_drivers.alert_sender"):
        assert sender.process_batch()["processed"] == 2
    assert caplog.messages == ["lease ends before the delivery deadline: 1 alert(s) left for the next claim"]


def test_a_sender_claims_ten_alerts_a_batch_by_default(hoc_coordinator, receiver):
    queue_webhooks(hoc_coordinator, receiver.url, count=11)
    sender = AlertSender(hoc_coordinator, clock=lambda: T0)
    assert sender.lease_seconds == 10 * (10 + 5)
    assert sender.process_batch()["sent"] == 10
    with pytest.raises(ValueError, match=r"^batch_size must be at least 1, got 0$"):
        AlertSender(hoc_coordinator, batch_size=0)
    with pytest.raises(ValueError, match=r"^timeout must be a positive number of seconds, got 0$"):
        AlertDelivery(timeout=0)


def test_an_outcome_that_cannot_be_recorded_is_logged_and_counted(hoc_coordinator, receiver, caplog):
    alerts = queue_webhooks(hoc_coordinator, receiver.url, count=2)
    with hoc_coordinator.transaction() as tx:  # claims still work; marking sent fails
        refuse_writes(tx, "costsim_alert_queue", "no sent", event="UPDATE", when="NEW.status = 'sent'")
    with caplog.at_level(logging.ERROR, logger="hoc_drivers.alert_sender"):
        counts = AlertSender(hoc_coordinator, clock=lambda: T0).process_batch()
    assert (counts["processed"], counts["sent"], counts["errors"]) == (2, 0, 2)
    assert sorted(caplog.messages) == sorted(f"recording the outcome of alert {a.id} failed" for a in alerts)


def test_drain_reports_each_batch_and_the_totals(hoc_coordinator, receiver):
    queue_webhooks(hoc_coordinator, receiver.url, count=3)
    batches = []
    totals = AlertSender(hoc_coordinator, clock=lambda: T0).drain(batch_size=2, on_batch=batches.append)
    assert [b["sent"] for b in batches] == [2, 1, 0]
    assert totals == {"processed": 3, "sent": 3, "retried": 0, "failed": 0, "lost": 0, "errors": 0}


def test_only_a_sent_alert_marks_its_incident_and_only_its_own_tenants(hoc_coordinator, receiver):
    with hoc_coordinator.transaction() as tx:
        for incident_id, tenant in (("inc-1", "acme"), ("inc-2", "acme"), ("inc-3", "globex")):
            Incident.insert(id=incident_id, tenant_id=tenant, title="x", severity="low",
                            trigger_type="manual").execute(tx.db)
        driver = AlertDriver(tx)
        for incident_id, path in (("inc-1", "/busy"), ("inc-2", "/ok"), ("inc-3", "/ok")):
            driver.insert_alert("acme", {}, "t", incident_id=incident_id, channel="webhook",
                                destination={"url": receiver.url + path}, now=T0)
    receiver.on_request = lambda: setattr(receiver, "status", 503 if receiver.requests[-1][0] == "/busy" else 200)
    assert AlertSender(hoc_coordinator, clock=lambda: T0).process_batch()["sent"] == 2
    marked = {i.id: i.alert_sent for i in Incident.select().execute(hoc_coordinator.db)}
    assert marked == {"inc-1": False, "inc-2": True, "inc-3": False}  # inc-3 is another tenant's


@pytest.mark.parametrize("status, max_attempts", [(503, 1), (503, 2), (200, 2)], ids=["failed", "retried", "sent"])
def test_an_outcome_whose_claim_was_taken_over_is_lost_and_changes_nothing(hoc_coordinator, receiver, caplog,
                                                                           status, max_attempts):
    with hoc_coordinator.transaction() as tx:
        Incident.insert(id="inc-1", tenant_id="acme", title="x", severity="low", trigger_type="manual").execute(tx.db)
        alert = AlertDriver(tx).insert_alert("acme", {}, "t", incident_id="inc-1", channel="webhook",
                                             destination={"url": receiver.url}, max_attempts=max_attempts, now=T0)
    now = [T0]
    sender = AlertSender(hoc_coordinator, AlertDelivery(timeout=2), clock=lambda: now[0])

    def lease_lapses_and_another_sender_claims():
        receiver.status = status
        now[0] = T0 + timedelta(seconds=sender.lease_seconds)
        with hoc_coordinator.transaction() as tx:
            AlertDriver(tx).fetch_pending_alerts(now[0], 1, 60)

    receiver.on_request = lease_lapses_and_another_sender_claims
    with caplog.at_level(logging.WARNING, logger="hoc_drivers.alert_sender"):
        assert sender.process_batch() == {"processed": 1, "sent": 0, "retried": 0, "failed": 0, "lost": 1,
                                          "errors": 0}
    outcome = "sent" if status == 200 else "HTTP 503: ok"
    assert caplog.messages == [f"outcome of alert {alert.id} ({outcome}) not recorded: its claim no longer "
                               f"holds (the lease lapsed and another sender took it)"]
    assert (row(hoc_coordinator, alert).status, row(hoc_coordinator, alert).attempts) == ("pending", 0)
    assert Incident.select().where(Incident.id == "inc-1").get(hoc_coordinator.db).alert_sent is False
