"""Alert Emitter: near-threshold and breach alerts through UI, webhook, Slack and e-mail.

`AlertEmitter(tx)` (the server edition's name: `get_alert_emitter(tx)`) works inside the
caller's coordinator transaction and never commits; `emit(signal, config)` decides from the
signal whether it calls for an alert (a breach, or a near signal from the config's near
threshold on). The UI channel writes a `notifications` row. The network channels (webhook,
Slack, e-mail) are written to the alert queue in the same transaction and delivered after
commit by the alert sender, with retry and backoff: an alert raised while offline goes out when
the network returns, a crash loses none, and a rolled-back transaction sends nothing. A queued
network channel counts as sent (the queue guarantees delivery or a visible failure).

Webhook bodies are signed, not accompanied by the secret: when a secret is set the queued
request carries `X-Signature: sha256=<HMAC-SHA256 of the exact body, hex>` and the secret
itself is never stored or sent. Invalid configuration or signals (a non-http(s) URL, a bad
e-mail address, an unknown channel, a negative threshold) are a `ValueError` before anything
is written.

Throttling that outlives the process: a config stored by name (`AlertConfigWriter(tx).save`,
table `alert_configs`, never the webhook secret) keeps `last_alert_at` / `alerts_sent_count`,
and `AlertEmitter.emit_stored(name, signal)` loads it inside the transaction (BEGIN IMMEDIATE, so
two processes throttle one after the other), counts the run's near alerts from the signal
history (table `threshold_signals`, one row per signal, throttled ones too), applies the same
rules and stores the new state and the signal. UI notifications are read with
`NotificationReader(db)` and acknowledged with `NotificationWriter(tx).ack`.
"""
import hashlib
import hmac
import logging

from .alert_config import (AlertChannel, AlertConfig, AlertConfigReader, AlertConfigWriter,  # noqa: F401
                           ThresholdSignal, require_header_text, validate_email_address, validate_http_url)
from .alert_driver import AlertQueueWriter
from .listing import expand_id, page
from .models.alerts import Notification, canonical_json
from .models.base import PreparedInsert, new_id, utcnow
from .validation import (require_database, require_non_negative, require_tenant, require_text,
                         require_transaction)

ACCESS = "WRITE"

__all__ = ["AlertChannel", "AlertConfig", "ThresholdSignal", "AlertEmitter", "SIGNATURE_HEADER",
           "AlertConfigReader", "AlertConfigWriter", "NotificationReader", "NotificationWriter",
           "get_alert_emitter", "sign_body", "validate_http_url", "validate_email_address"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature"
_INSERT_NOTIFICATION = PreparedInsert(Notification, (
    "id", "tenant_id", "notification_type", "title", "run_id", "policy_id", "metric",
    "current_value", "threshold_value", "percentage", "action_taken", "data", "created_at"))
def sign_body(secret, body):
    """`sha256=<hex>`: HMAC-SHA256 of the body bytes under the secret."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


class AlertEmitter:
    """Sends threshold alerts through a config's channels inside the caller's transaction.

    `tx` is the open coordinator transaction; `clock` returns aware UTC now (throttling).
    Each channel is written in its own savepoint, so one failing channel undoes only itself.
    """

    ACCESS = "WRITE"

    def __init__(self, tx, clock=utcnow):
        self.tx = require_transaction(tx, check_open=False)
        self.clock = clock
        self.queue = AlertQueueWriter(tx)

    def emit(self, signal, config, action_taken=None, run_alert_count=0):
        """Raise the alert `signal` calls for: a breach alert (`emit_breach`), or a near alert
        (`emit_near_threshold`, the run having had `run_alert_count` near alerts) when the
        config's `should_alert` says so.

        Returns {signal_id, signal_type, percentage, alert_sent, channels}, plus `reason` when a
        near signal calls for no alert: below the near threshold, near alerts disabled, or
        throttled (then nothing is written).
        """
        breach = signal.signal_type == "breach"
        if action_taken is not None and not breach:
            raise ValueError("action_taken applies to breach alerts only")
        result = {"signal_id": signal.signal_id, "signal_type": signal.signal_type,
                  "percentage": round(signal.percentage, 3), "alert_sent": False}
        if breach:
            result["alert_sent"] = self.emit_breach(signal, config, action_taken)
        elif config.should_alert(signal.percentage):
            throttled = not config.can_send_alert(run_alert_count, self.clock())
            result["alert_sent"] = self.emit_near_threshold(signal, config, run_alert_count)
            if throttled:
                result["reason"] = (f"throttled (last near alert at {config.last_alert_at}, at most one "
                                    f"per {config.min_alert_interval_seconds:g} s and "
                                    f"{config.max_alerts_per_run} per run)")
        else:
            result["reason"] = (f"below the near threshold ({config.near_threshold_percentage:g}%)"
                                if config.near_threshold_enabled else "near-threshold alerts are disabled")
        result["channels"] = list(signal.alert_channels)
        return result

    def emit_stored(self, name, signal, action_taken=None, webhook_secret=None):
        """`emit` with the config stored as `name` for the signal's tenant, throttled across
        processes: the run's alert count comes from the signal history, the config's new
        throttling state and the signal are stored. Returns `emit`'s result; LookupError when
        there is no such config."""
        store = AlertConfigWriter(self.tx)
        config, config_id = store.load(signal.tenant_id, name, webhook_secret)
        result = self.emit(signal, config, action_taken, store.near_alerts_of_run(signal))
        store.record(config_id, name, config, signal, action_taken, self.clock())
        return result

    def emit_near_threshold(self, signal, config, run_alert_count=0):
        """A near-threshold alert unless disabled or throttled; True when a channel took it.

        On success the signal records its channels and the config its `last_alert_at` and
        `alerts_sent_count`.
        """
        self.tx.require_open()
        self._check(signal, config)
        require_non_negative(run_alert_count, "run_alert_count", integer=True)
        now = self.clock()
        if not config.near_threshold_enabled or not config.can_send_alert(run_alert_count, now):
            return False
        channels = self._send(signal, config, breach=False, action_taken=None, now=now)
        if not channels:
            return False
        signal.mark_alert_sent(channels, now)
        config.record_alert_sent(now)
        return True

    def emit_breach(self, signal, config, action_taken):
        """A breach alert, never throttled and not counted for throttling; True when sent."""
        self.tx.require_open()
        self._check(signal, config)
        if action_taken is not None:
            require_header_text(action_taken, "action_taken")
        if not config.breach_alert_enabled:
            return False
        now = self.clock()
        channels = self._send(signal, config, breach=True, action_taken=action_taken, now=now)
        if not channels:
            return False
        signal.mark_alert_sent(channels, now)
        return True

    @staticmethod
    def _check(signal, config):
        config.validate()
        signal.validate()
        if (signal.tenant_id, signal.policy_id) != (config.tenant_id, config.policy_id):
            raise ValueError(f"signal of tenant {signal.tenant_id!r} / policy {signal.policy_id!r} "
                             f"does not match config of tenant {config.tenant_id!r} / policy "
                             f"{config.policy_id!r}")

    def _send(self, signal, config, breach, action_taken, now):
        """Write each enabled channel in its own savepoint; returns the channels that took it."""
        senders = {"ui": self._ui, "webhook": self._webhook, "slack": self._slack,
                   "email": self._email}
        sent = []
        for channel in config.enabled_channels:
            try:
                with self.tx.savepoint():
                    senders[channel](signal, config, breach, action_taken, now)
            except Exception:
                log.exception("alert channel %s failed for signal %s", channel, signal.signal_id)
                continue
            sent.append(channel)
        return sent

    def _ui(self, signal, config, breach, action_taken, now):
        _INSERT_NOTIFICATION.execute(self.tx.db, {
            "id": new_id(), "tenant_id": signal.tenant_id,
            "notification_type": "breach" if breach else "near_threshold",
            "title": f"Policy {_label(breach)}: {signal.metric}", "run_id": signal.run_id,
            "policy_id": signal.policy_id, "metric": signal.metric,
            "current_value": signal.current_value, "threshold_value": signal.threshold_value,
            "percentage": signal.percentage, "action_taken": action_taken,
            "data": {"signal_id": signal.signal_id, "step_index": signal.step_index},
            "created_at": now})

    def _queue(self, signal, breach, channel, payload, destination, now):
        self.queue.insert_alert(signal.tenant_id, payload,
                                "threshold_breach" if breach else "threshold_near",
                                channel=channel, destination=destination, now=now)

    def _webhook(self, signal, config, breach, action_taken, now):
        body = {"event_type": "threshold_breach" if breach else "threshold_near",
                "signal_id": signal.signal_id, "tenant_id": signal.tenant_id,
                "run_id": signal.run_id, "policy_id": signal.policy_id, "metric": signal.metric,
                "current_value": signal.current_value, "threshold_value": signal.threshold_value,
                "percentage": signal.percentage, "step_index": signal.step_index,
                "action_taken": action_taken, "timestamp": signal.timestamp.isoformat()}
        destination = {"url": config.webhook_url}
        if config.webhook_secret:
            signature = sign_body(config.webhook_secret, canonical_json(body).encode("utf-8"))
            destination["headers"] = {SIGNATURE_HEADER: signature}
        self._queue(signal, breach, "webhook", body, destination, now)

    def _slack(self, signal, config, breach, action_taken, now):
        fields = [{"title": "Run ID", "value": signal.run_id, "short": True},
                  {"title": "Policy ID", "value": signal.policy_id, "short": True},
                  {"title": "Current Value", "value": str(signal.current_value), "short": True},
                  {"title": "Threshold", "value": str(signal.threshold_value), "short": True},
                  {"title": "Percentage", "value": f"{signal.percentage:.1f}%", "short": True}]
        if action_taken:
            fields.append({"title": "Action Taken", "value": action_taken.upper(), "short": True})
        emoji = "\U0001f6a8" if breach else "\u26a0\ufe0f"
        payload = {"attachments": [{
            "color": "#ff0000" if breach else "#ffcc00",
            "title": f"{emoji} Policy {_label(breach)}: {signal.metric}",
            "fields": fields, "ts": int(signal.timestamp.timestamp())}]}
        if config.slack_channel:
            payload["channel"] = config.slack_channel
        self._queue(signal, breach, "slack", payload, {"url": config.slack_webhook_url}, now)

    def _email(self, signal, config, breach, action_taken, now):
        lines = [f"Policy {_label(breach).title()} Alert", "",
                 f"Signal ID: {signal.signal_id}", f"Run ID: {signal.run_id}",
                 f"Policy ID: {signal.policy_id}", f"Metric: {signal.metric}",
                 f"Current Value: {signal.current_value}", f"Threshold: {signal.threshold_value}",
                 f"Percentage: {signal.percentage:.1f}%"]
        if action_taken:
            lines.append(f"Action Taken: {action_taken}")
        payload = {"subject": f"[AOS Alert] {_label(breach)}: {signal.metric}",
                   "body": "\n".join(lines) + "\n"}
        self._queue(signal, breach, "email", payload,
                    {"recipients": list(config.email_recipients)}, now)


class NotificationReader:
    """The UI notifications the emitter writes; only SELECTs."""

    ACCESS = "READ"

    def __init__(self, db):
        self.db = require_database(db)

    def list(self, tenant_id, unread=False, limit=50, since=None, until=None, offset=0):
        """The tenant's notifications (only unacknowledged ones with `unread`), newest first
        (window: listing.page)."""
        condition = Notification.tenant_id == require_tenant(tenant_id)
        if unread:
            condition &= Notification.read_at.is_null()
        return list(page(Notification.select().where(condition), Notification.created_at, since, until,
                         offset, limit).execute(self.db))


    def full_id(self, tenant_id, prefix):
        """The id of the tenant's notification starting with `prefix`; None when none does;
        listing.AmbiguousId when several do."""
        return expand_id(self.db, Notification.select().where(Notification.tenant_id == require_tenant(tenant_id)),
                         Notification.id, require_text(prefix, "notification_id"))


class NotificationWriter:
    """Acknowledges UI notifications; writes in the caller's transaction, never commits."""

    ACCESS = "WRITE"

    def __init__(self, tx):
        self.tx = require_transaction(tx, check_open=False)

    def ack(self, tenant_id, notification_id, now=None):
        """Mark the tenant's notification read at `now` (an acknowledged one keeps its first
        read time); returns it, or None if the tenant has no such notification."""
        self.tx.require_open()
        require_tenant(tenant_id)
        require_text(notification_id, "notification_id")
        scope = (Notification.tenant_id == tenant_id) & (Notification.id == notification_id)
        (Notification.update(read_at=now or utcnow())
         .where(scope & Notification.read_at.is_null()).execute(self.tx.db))
        return next(iter(Notification.select().where(scope).execute(self.tx.db)), None)


def get_alert_emitter(tx, clock=utcnow):
    """The seed's name for an emitter: an `AlertEmitter` on transaction `tx`."""
    return AlertEmitter(tx, clock)


def _label(breach):
    return "BREACH" if breach else "NEAR THRESHOLD"
