"""Alert sender: the engine that delivers queued alerts, with exponential backoff.

`AlertSender(coordinator)` runs its own transactions. Each batch is claimed in one short
coordinator transaction (see `alert_driver`), delivered outside any transaction, and each
outcome is recorded in its own transaction right after the attempt, so a crash re-delivers at
most the alert that was in flight. After a failed attempt n = attempts + 1: n >= max_attempts
marks the alert failed, otherwise it is due again after min(2 ** n, max_backoff_seconds)
seconds (2, 4, 8, ... 256, 300). An alert with no destination is a configuration error: it is
marked failed at once (visible in the stats) and `retry_failed_alerts` revives it once the
configuration is fixed. Nothing here raises into the caller: failures are logged and counted.

Delivery deadline: `AlertDelivery(timeout=...)` (CLI `--timeout`, default 10 s) bounds each
whole delivery — connect, TLS handshake, request and reply, HTTP and SMTP alike — not each
socket read. When it passes, the delivery's sockets are shut down, whatever they are waiting
for, and the attempt is a retry with the error "delivery deadline of N s passed", however
slowly the receiver trickles its bytes. (Name resolution is left to the system resolver.)
Lease and fencing: a batch is claimed for batch_size x (deadline + LEASE_MARGIN_SECONDS)
seconds, i.e. every alert of the batch gets its deadline plus a 5 s margin to record the
outcome. A delivery is started only while the lease still covers its whole deadline (the rest
of the batch is left to be claimed again when the lease ends), and an outcome is recorded only
while the alert still carries this sender's claim token (the UPDATE is conditional on it); an
outcome whose claim was taken over changes nothing, is logged and counted as `lost`. So two
senders never deliver one alert at the same time.

Only the standard library talks to the network (`urllib.request`, `smtplib`). `serve()` keeps
a sender running: it delivers what is due, then waits for the next alert to fall due, for a
commit that queues one (it subscribes to the `AlertQueued` fact: on SQLite a commit in this
process, on PostgreSQL in any process), or for `poll_seconds` (on SQLite, alerts queued by other
processes). Old alerts are deleted by
`alert_driver.delete_old_alerts`, which needs no sender.
"""
import http.client
import json
import logging
import smtplib
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field, fields
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formataddr

from .alert_driver import AlertQueueReader, AlertQueueWriter
from .alert_config import validate_http_url
from .facts import AlertQueued, FactsMissed
from .models.alerts import canonical_json
from .models.base import utcnow
from .bus import subscribe
from . import settings

__all__ = ["AlertSender", "AlertDelivery", "DeliveryResult", "SmtpSettings", "backoff_seconds",
           "LEASE_MARGIN_SECONDS"]

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 10.0
DEFAULT_MAX_BACKOFF_SECONDS = 300
DEFAULT_BATCH_SIZE = 10
DEFAULT_POLL_SECONDS = 5.0
LEASE_MARGIN_SECONDS = 5.0  # per alert of a batch, on top of its deadline: to record the outcome
USER_AGENT = "hoc-drivers-alert-sender/0.1"


def backoff_seconds(attempt, max_backoff_seconds=DEFAULT_MAX_BACKOFF_SECONDS):
    """Delay before the next try after failed attempt number `attempt`: min(2**n, cap)."""
    return min(2 ** attempt, max_backoff_seconds)


@dataclass
class DeliveryResult:
    """The outcome of one delivery attempt; `permanent` failures are not retried."""

    success: bool
    error_type: str | None = None
    error_message: str | None = None
    status_code: int | None = None
    permanent: bool = False

    @property
    def error(self):
        """The error recorded with a failed attempt: its message, else its type (a NUL in it,
        as a receiver's reply may hold, written as the text \\x00: the queue stores no NUL)."""
        error = self.error_message or self.error_type
        return error.replace("\x00", "\\x00") if error else error


@dataclass
class SmtpSettings:
    """Where e-mail goes: the `smtp.*` settings (SMTP_HOST, SMTP_PORT, SMTP_USERNAME,
    SMTP_PASSWORD, SMTP_FROM_*; see `hoc_drivers.settings`)."""

    host: str = settings.default("smtp.host")
    port: int = settings.default("smtp.port")
    username: str | None = settings.default("smtp.username")
    password: str | None = field(default=settings.default("smtp.password"), repr=False)
    from_address: str = settings.default("smtp.from_address")
    from_name: str = settings.default("smtp.from_name")

    @classmethod
    def from_env(cls):
        """The `smtp.*` settings: environment, else settings file, else defaults."""
        return cls(**{f.name: settings.get(f"smtp.{f.name}") for f in fields(cls)})


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are failures: a signed alert body is never re-sent to another address."""

    def redirect_request(self, *args, **kwargs):
        return None


class _Deadline:
    """One delivery's whole deadline, as a context manager.

    Every socket the delivery opens goes through `connect`, which watches it (through a
    duplicate descriptor, so TLS wrapping does not hide it); when the deadline passes, a timer
    shuts the watched sockets down, which ends at once whatever connect, handshake, send or
    read is waiting on them, and `expired` becomes true.
    """

    def __init__(self, seconds):
        self.seconds = seconds
        self.expired = False
        self._ends = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._watched = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc_info):
        self._timer.cancel()
        with self._lock:
            for sock in self._watched:
                sock.close()
            self._watched = None  # a timer firing now finds nothing left to shut down

    def connect(self, address, timeout=None, source_address=None):
        """`socket.create_connection` within what is left of the deadline; the socket is watched."""
        left = self._ends - time.monotonic()
        if left <= 0:
            raise TimeoutError("delivery deadline passed")
        sock = socket.create_connection(address, min(left, timeout or left), source_address)
        with self._lock:
            if self.expired:
                sock.close()
                raise TimeoutError("delivery deadline passed")
            self._watched.append(sock.dup())
        return sock

    def _expire(self):
        with self._lock:
            if self._watched is None:
                return
            self.expired = True
            for sock in self._watched:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # not connected (any more): nothing is waiting on it


class _DeadlineHandler(urllib.request.HTTPSHandler, urllib.request.HTTPHandler):
    """urllib's HTTP and HTTPS handler, with connections whose sockets a `_Deadline` watches."""

    def __init__(self, deadline):
        super().__init__()
        self.deadline = deadline

    def do_open(self, http_class, req, **kwargs):
        """Open `req` as urllib does, connecting through the deadline."""
        def connection(host, **options):
            conn = http_class(host, **options)
            conn._create_connection = self.deadline.connect
            return conn
        return super().do_open(connection, req, **kwargs)


class _DeadlineSMTP(smtplib.SMTP):
    """An SMTP client connected to `host`:`port`, whose socket a `_Deadline` watches (the host
    given here is also the name STARTTLS checks the server's certificate against)."""

    def __init__(self, deadline, host, port):
        self.deadline = deadline
        super().__init__(host, port, timeout=deadline.seconds)

    def _get_socket(self, host, port, timeout):
        return self.deadline.connect((host, port), timeout, self.source_address)


class AlertDelivery:
    """Delivers one queued alert over HTTP (webhook, Slack, Alertmanager) or SMTP.

    `timeout` is the whole-delivery deadline in seconds (see the module docstring).
    `alertmanager_url` (default: setting alerts.alertmanager_url, env ALERTMANAGER_URL) receives
    alerts of channel
    "alertmanager" that carry no URL of their own, at `<url>/api/v2/alerts`.
    """

    def __init__(self, timeout=DEFAULT_TIMEOUT_SECONDS, alertmanager_url=None, smtp=None):
        if not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
        self.timeout = timeout
        self.alertmanager_url = settings.get("alerts.alertmanager_url", alertmanager_url or None)
        self.smtp = smtp

    def deliver(self, alert):
        """Try once to deliver `alert` within the deadline; never raises."""
        with _Deadline(self.timeout) as deadline:
            try:
                result = self._deliver(alert, deadline)
            except Exception as exc:
                log.exception("delivering alert %s failed unexpectedly", alert.id)
                result = DeliveryResult(False, "internal", f"{type(exc).__name__}: {exc}"[:500])
        if deadline.expired and not result.success:
            return DeliveryResult(False, "timeout", f"delivery deadline of {self.timeout:g} s passed")
        return result

    def _deliver(self, alert, deadline):
        destination = alert.destination or {}
        if alert.channel == "email":
            return self._send_email(destination.get("recipients") or [], alert.payload, deadline)
        url = destination.get("url")
        if url is None and alert.channel == "alertmanager" and self.alertmanager_url:
            url = self.alertmanager_url.rstrip("/") + "/api/v2/alerts"
        if not url:
            return DeliveryResult(False, "configuration", "no destination configured",
                                  permanent=True)
        try:
            validate_http_url(url, "destination url")
        except ValueError as exc:
            return DeliveryResult(False, "configuration", str(exc), permanent=True)
        return self._post(url, canonical_json(alert.payload).encode("utf-8"),
                          destination.get("headers") or {}, deadline)

    def _post(self, url, body, headers, deadline):
        request = urllib.request.Request(url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT, **headers})
        opener = urllib.request.build_opener(_NoRedirect, _DeadlineHandler(deadline))
        try:
            with opener.open(request, timeout=self.timeout) as response:
                return DeliveryResult(True, status_code=response.status)
        except urllib.error.HTTPError as exc:
            text = exc.read(200).decode("utf-8", "replace")
            return DeliveryResult(False, f"http_{exc.code}", f"HTTP {exc.code}: {text}",
                                  status_code=exc.code)
        except (TimeoutError, socket.timeout) as exc:
            return DeliveryResult(False, "timeout", f"Timeout: {exc}")
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, (TimeoutError, socket.timeout)):
                return DeliveryResult(False, "timeout", f"Timeout: {exc.reason}")
            return DeliveryResult(False, "connection", str(exc.reason)[:500])
        except (OSError, http.client.HTTPException) as exc:
            return DeliveryResult(False, "connection", f"{type(exc).__name__}: {exc}"[:500])

    def _send_email(self, recipients, payload, deadline):
        if not recipients:
            return DeliveryResult(False, "configuration", "no e-mail recipients configured",
                                  permanent=True)
        settings = self.smtp or SmtpSettings.from_env()
        message = EmailMessage()
        message["Subject"] = payload["subject"]
        message["From"] = formataddr((settings.from_name, settings.from_address))
        message["To"] = ", ".join(recipients)
        message.set_content(payload["body"])
        try:
            with _DeadlineSMTP(deadline, settings.host, settings.port) as smtp:
                smtp.ehlo()
                if smtp.has_extn("starttls"):
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.ehlo()
                elif settings.username:
                    return DeliveryResult(False, "smtp", "refusing to send SMTP credentials "
                                          "without STARTTLS")
                if settings.username:
                    smtp.login(settings.username, settings.password or "")
                refused = smtp.send_message(message)
        except (TimeoutError, socket.timeout) as exc:
            return DeliveryResult(False, "timeout", f"Timeout: {exc}")
        except smtplib.SMTPException as exc:
            return DeliveryResult(False, "smtp", str(exc)[:500])
        except OSError as exc:
            return DeliveryResult(False, "connection", str(exc)[:500])
        if refused:
            return DeliveryResult(False, "smtp", "recipients refused: " + json.dumps(sorted(refused)))
        return DeliveryResult(True)


class AlertSender:
    """Delivers due alerts from the queue and records each outcome; never raises.

    `clock` returns aware UTC now (inject one, or use freezegun, to test backoff and leases).
    """

    def __init__(self, coordinator, delivery=None, clock=utcnow, batch_size=DEFAULT_BATCH_SIZE,
                 max_backoff_seconds=DEFAULT_MAX_BACKOFF_SECONDS):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.coordinator = coordinator
        self.delivery = delivery or AlertDelivery()
        self.clock = clock
        self.batch_size = batch_size
        self.max_backoff_seconds = max_backoff_seconds
        self._wake = threading.Event()
        self._stopping = False

    @property
    def lease_seconds(self):
        """How long a claimed batch stays reserved for this sender (see `lease_for`)."""
        return self.lease_for(self.batch_size)

    def lease_for(self, batch_size):
        """The lease of a batch of `batch_size`: batch_size x (deadline + LEASE_MARGIN_SECONDS)."""
        return batch_size * (self.delivery.timeout + LEASE_MARGIN_SECONDS)

    def process_batch(self, batch_size=None):
        """Claim and deliver one batch: {processed, sent, retried, failed, lost, errors}.

        `processed` counts the deliveries started: none starts once what is left of the lease
        would not cover its deadline (those alerts are claimed again when the lease ends).
        `lost` counts outcomes not recorded because the claim had expired and another sender
        took the alert; `errors` counts database failures (logged).
        """
        counts = dict.fromkeys(("processed", "sent", "retried", "failed", "lost", "errors"), 0)
        batch_size = batch_size or self.batch_size
        try:
            with self.coordinator.transaction() as tx:
                alerts = AlertQueueWriter(tx).fetch_pending_alerts(self.clock(), batch_size,
                                                                   self.lease_for(batch_size))
        except Exception:
            log.exception("claiming alerts failed")
            counts["errors"] += 1
            return counts
        deadline = timedelta(seconds=self.delivery.timeout)
        for index, alert in enumerate(alerts):
            if self.clock() + deadline > alert.next_attempt_at:  # the end of this claim's lease
                log.warning("lease ends before the delivery deadline: %d alert(s) left for the "
                            "next claim", len(alerts) - index)
                break
            counts["processed"] += 1
            result = self.delivery.deliver(alert)
            try:
                counts[self._record(alert, result)] += 1
            except Exception:
                log.exception("recording the outcome of alert %s failed", alert.id)
                counts["errors"] += 1
        return counts

    def _record(self, alert, result):
        """Write the attempt's outcome if the claim still holds; returns the counter it belongs to."""
        now, attempt = self.clock(), alert.attempts + 1
        with self.coordinator.transaction() as tx:
            driver = AlertQueueWriter(tx)
            if result.success:
                outcome = "sent" if driver.update_alert_sent(alert, now) else "lost"
                if outcome == "sent" and alert.incident_id:
                    driver.mark_incident_alert_sent(alert.tenant_id, alert.incident_id, now)
            elif result.permanent or attempt >= alert.max_attempts:
                outcome = "failed" if driver.update_alert_failed(alert, now, result.error) else "lost"
            else:
                retry_at = now + timedelta(seconds=backoff_seconds(attempt, self.max_backoff_seconds))
                recorded = driver.update_alert_retry(alert, now, retry_at, result.error)
                outcome = "retried" if recorded else "lost"
        if outcome == "lost":
            log.warning("outcome of alert %s (%s) not recorded: its claim no longer holds (the "
                        "lease lapsed and another sender took it)", alert.id,
                        "sent" if result.success else result.error)
        elif not result.success:
            log.info("alert %s attempt %d failed (%s): %s", alert.id, attempt, outcome, result.error)
        return outcome

    def drain(self, batch_size=None, on_batch=None):
        """Process batches until none is due; totals as `process_batch`.

        `on_batch(counts)` is called after each batch (e.g. to move a progress bar). Every
        claimed alert leaves the due range (sent, failed, retried later, or leased), so this
        ends; a batch that cannot be claimed ends it too.
        """
        totals = dict.fromkeys(("processed", "sent", "retried", "failed", "lost", "errors"), 0)
        while True:
            counts = self.process_batch(batch_size)
            for key, value in counts.items():
                totals[key] += value
            if on_batch:
                on_batch(counts)
            if counts["processed"] == 0:
                return totals

    def serve(self, poll_seconds=DEFAULT_POLL_SECONDS, on_batch=None):
        """Deliver alerts until `stop()` is called; totals as `process_batch`.

        After each drain it waits until the next queued alert falls due, until `wake()` (called
        after each commit that notes `AlertQueued` on this database: in this process, or on
        PostgreSQL in any process), or at most `poll_seconds` (on SQLite, alerts queued by other
        processes), whichever comes first.
        `on_batch(counts)` is called after each batch, as in `drain`. After a database error
        it waits the full `poll_seconds` before trying again.
        """
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be positive, got {poll_seconds}")
        totals = dict.fromkeys(("processed", "sent", "retried", "failed", "lost", "errors"), 0)
        unsubscriptions = [subscribe(self.coordinator.db, fact_type, self.wake)
                           for fact_type in (AlertQueued, FactsMissed)]
        try:
            while not self._stopping:
                self._wake.clear()  # before draining: a wake during the drain is kept
                counts = self.drain(on_batch=on_batch)
                for key, value in counts.items():
                    totals[key] += value
                if not self._stopping:
                    self._wake.wait(poll_seconds if counts["errors"]
                                    else self._seconds_until_due(poll_seconds))
        finally:
            for unsubscribe in unsubscriptions:
                unsubscribe()
            self._stopping = False
        return totals

    def _seconds_until_due(self, poll_seconds):
        """Seconds until the next queued alert falls due, within [0, poll_seconds]."""
        try:
            due = AlertQueueReader(self.coordinator.db).next_due_at()
        except Exception:
            log.exception("reading the next due alert failed")
            return poll_seconds
        if due is None:
            return poll_seconds
        return min(max((due - self.clock()).total_seconds(), 0.0), poll_seconds)

    def wake(self, fact=None):
        """Make a waiting `serve()` look at the queue now (`fact`: the `AlertQueued` that woke
        it, or `FactsMissed`: one may have gone unseen)."""
        self._wake.set()

    def stop(self):
        """Make `serve()` return after the batch in flight (safe from a signal handler)."""
        self._stopping = True
        self._wake.set()

