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
"""
import hashlib
import hmac
import logging
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from urllib.parse import urlsplit

from .alert_driver import AlertQueueWriter
from .models.alerts import Notification, canonical_json
from .models.base import PreparedInsert, as_utc, new_id, utcnow
from .validation import require_text, require_transaction

ACCESS = "WRITE"

__all__ = ["AlertChannel", "AlertConfig", "ThresholdSignal", "AlertEmitter", "SIGNATURE_HEADER",
           "get_alert_emitter", "sign_body", "validate_http_url", "validate_email_address"]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Signature"
SIGNAL_TYPES = ("near", "breach")
_INSERT_NOTIFICATION = PreparedInsert(Notification, (
    "id", "tenant_id", "notification_type", "title", "run_id", "policy_id", "metric",
    "current_value", "threshold_value", "percentage", "action_taken", "data", "created_at"))
_EMAIL = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+"
                    r"@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)+")


class AlertChannel(str, Enum):
    """Where a threshold alert goes."""

    UI = "ui"
    WEBHOOK = "webhook"
    EMAIL = "email"
    SLACK = "slack"


def validate_http_url(url, name):
    """`url` must be an http(s) URL with a host and no whitespace; returns it."""
    if not isinstance(url, str) or not url or any(c.isspace() for c in url):
        raise ValueError(f"{name} must be an http(s) URL, got {url!r}")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{name} must be an http(s) URL, got {url!r}")
    return url


def validate_email_address(address):
    """`address` must look like local@domain.tld (no spaces, no display name); returns it."""
    if not isinstance(address, str) or len(address) > 254 or not _EMAIL.fullmatch(address):
        raise ValueError(f"invalid e-mail address {address!r}")
    return address


def _header_safe_text(value, name):
    """Non-empty text without control characters (it ends up in headers and subjects)."""
    require_text(value, name)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{name} must not contain control characters, got {value!r}")
    return value


def _non_negative(value, name, integer=False):
    """A finite number >= 0 (an int when `integer`); ValueError otherwise."""
    kinds = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value) or value < 0:
        kind = "integer" if integer else "number"
        raise ValueError(f"{name} must be a non-negative {kind}, got {value!r}")
    return value


def _channel_value(channel):
    """'ui' / 'webhook' / 'email' / 'slack' from a channel or its name; ValueError if unknown."""
    try:
        return AlertChannel(channel.lower() if isinstance(channel, str) else channel).value
    except ValueError:
        raise ValueError(f"unknown alert channel {channel!r} (expected one of: "
                         f"{', '.join(c.value for c in AlertChannel)})") from None


@dataclass
class AlertConfig:
    """Alerting settings of one policy of one tenant, with its throttling state.

    Near-threshold alerts are throttled: not while `now - last_alert_at` is below
    `min_alert_interval_seconds`, and not once the run has had `max_alerts_per_run`.
    The emitter updates `last_alert_at` / `alerts_sent_count` in place; storing the
    config is the caller's business. `webhook_secret` never appears in `to_dict()` or repr.
    """

    policy_id: str
    tenant_id: str
    near_threshold_enabled: bool = True
    near_threshold_percentage: float = 80
    breach_alert_enabled: bool = True
    enabled_channels: list = field(default_factory=lambda: [AlertChannel.UI.value])
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    email_recipients: list = field(default_factory=list)
    slack_webhook_url: str | None = None
    slack_channel: str | None = None
    min_alert_interval_seconds: float = 60
    max_alerts_per_run: int = 10
    last_alert_at: datetime | None = None
    alerts_sent_count: int = 0

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Check every setting (ValueError naming the first bad one); normalises channels and
        `last_alert_at` (naive, as read back from SQLite, means UTC)."""
        for name in ("policy_id", "tenant_id"):
            _header_safe_text(getattr(self, name), name)
        self.last_alert_at = as_utc(self.last_alert_at)
        if self.slack_channel is not None:
            _header_safe_text(self.slack_channel, "slack_channel")
        _non_negative(self.near_threshold_percentage, "near_threshold_percentage")
        _non_negative(self.min_alert_interval_seconds, "min_alert_interval_seconds")
        _non_negative(self.max_alerts_per_run, "max_alerts_per_run", integer=True)
        _non_negative(self.alerts_sent_count, "alerts_sent_count", integer=True)
        channels = []
        for channel in self.enabled_channels:
            value = _channel_value(channel)
            if value not in channels:
                channels.append(value)
        self.enabled_channels = channels
        if self.webhook_url is not None or AlertChannel.WEBHOOK.value in channels:
            validate_http_url(self.webhook_url, "webhook_url")
        if self.slack_webhook_url is not None or AlertChannel.SLACK.value in channels:
            validate_http_url(self.slack_webhook_url, "slack_webhook_url")
        for address in self.email_recipients:
            validate_email_address(address)
        if AlertChannel.EMAIL.value in channels and not self.email_recipients:
            raise ValueError("the email channel is enabled but email_recipients is empty")

    def should_alert(self, current_percentage):
        """True when near alerts are on and the percentage reached the near threshold."""
        return self.near_threshold_enabled and current_percentage >= self.near_threshold_percentage

    def is_throttled(self, now=None):
        """True while less than `min_alert_interval_seconds` passed since the last alert."""
        if self.last_alert_at is None:
            return False
        elapsed = ((now or utcnow()) - self.last_alert_at).total_seconds()
        return elapsed < self.min_alert_interval_seconds

    def can_send_alert(self, run_alert_count=0, now=None):
        """Not throttled, and the run has had fewer than `max_alerts_per_run` alerts."""
        return not self.is_throttled(now) and run_alert_count < self.max_alerts_per_run

    def record_alert_sent(self, now=None):
        """Remember a near alert went out now (starts the throttling interval)."""
        self.last_alert_at = now or utcnow()
        self.alerts_sent_count += 1

    def to_dict(self):
        """Settings without the webhook secret (only whether one is set)."""
        return {"policy_id": self.policy_id, "tenant_id": self.tenant_id,
                "near_threshold_enabled": self.near_threshold_enabled,
                "near_threshold_percentage": self.near_threshold_percentage,
                "breach_alert_enabled": self.breach_alert_enabled,
                "enabled_channels": list(self.enabled_channels), "webhook_url": self.webhook_url,
                "webhook_secret_set": bool(self.webhook_secret),
                "email_recipients": list(self.email_recipients),
                "slack_webhook_url": self.slack_webhook_url, "slack_channel": self.slack_channel,
                "min_alert_interval_seconds": self.min_alert_interval_seconds,
                "max_alerts_per_run": self.max_alerts_per_run,
                "last_alert_at": self.last_alert_at, "alerts_sent_count": self.alerts_sent_count}


@dataclass
class ThresholdSignal:
    """A run metric near (or past) a policy threshold; records which channels alerted.

    `percentage` defaults to current / threshold * 100 (a zero threshold gives 0 for a near
    signal, 100 for a breach).
    """

    tenant_id: str
    run_id: str
    policy_id: str
    metric: str
    current_value: float
    threshold_value: float
    signal_type: str = "near"
    percentage: float | None = None
    action_taken: str | None = None
    step_index: int | None = None
    signal_id: str = field(default_factory=lambda: f"SIG-{uuid.uuid4().hex[:12]}")
    timestamp: datetime = field(default_factory=utcnow)
    alert_sent: bool = False
    alert_channels: list = field(default_factory=list)
    alert_sent_at: datetime | None = None

    def __post_init__(self):
        self.validate()
        self.timestamp = as_utc(self.timestamp)
        if self.percentage is None:
            if self.threshold_value > 0:
                self.percentage = self.current_value / self.threshold_value * 100
            else:
                self.percentage = 100.0 if self.signal_type == "breach" else 0.0

    def validate(self):
        """Check the signal (ValueError naming the first bad field)."""
        for name in ("tenant_id", "run_id", "policy_id", "metric"):
            _header_safe_text(getattr(self, name), name)
        if self.signal_type not in SIGNAL_TYPES:
            raise ValueError(f"signal_type must be 'near' or 'breach', got {self.signal_type!r}")
        _non_negative(self.current_value, "current_value")
        _non_negative(self.threshold_value, "threshold_value")
        if self.percentage is not None:
            _non_negative(self.percentage, "percentage")

    def mark_alert_sent(self, channels, now=None):
        """Record that `channels` carried the alert."""
        self.alert_sent = True
        self.alert_channels = list(channels)
        self.alert_sent_at = now or utcnow()


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

    def emit(self, signal, config, action_taken=None):
        """Raise the alert `signal` calls for: a breach alert (`emit_breach`), or a near alert
        (`emit_near_threshold`) when the config's `should_alert` says so.

        Returns {signal_id, signal_type, percentage, alert_sent, channels}, plus `reason` when a
        near signal calls for no alert: below the near threshold, or near alerts disabled (then
        nothing is written).
        """
        breach = signal.signal_type == "breach"
        if action_taken is not None and not breach:
            raise ValueError("action_taken applies to breach alerts only")
        result = {"signal_id": signal.signal_id, "signal_type": signal.signal_type,
                  "percentage": round(signal.percentage, 3), "alert_sent": False}
        if breach:
            result["alert_sent"] = self.emit_breach(signal, config, action_taken)
        elif config.should_alert(signal.percentage):
            result["alert_sent"] = self.emit_near_threshold(signal, config)
        else:
            result["reason"] = (f"below the near threshold ({config.near_threshold_percentage:g}%)"
                                if config.near_threshold_enabled else "near-threshold alerts are disabled")
        result["channels"] = list(signal.alert_channels)
        return result

    def emit_near_threshold(self, signal, config, run_alert_count=0):
        """A near-threshold alert unless disabled or throttled; True when a channel took it.

        On success the signal records its channels and the config its `last_alert_at` and
        `alerts_sent_count`.
        """
        self.tx.require_open()
        self._check(signal, config)
        _non_negative(run_alert_count, "run_alert_count", integer=True)
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
            _header_safe_text(action_taken, "action_taken")
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


def get_alert_emitter(tx, clock=utcnow):
    """The seed's name for an emitter: an `AlertEmitter` on transaction `tx`."""
    return AlertEmitter(tx, clock)


def _label(breach):
    return "BREACH" if breach else "NEAR THRESHOLD"
