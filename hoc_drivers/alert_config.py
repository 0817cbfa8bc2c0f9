"""Alert configuration: what a policy's alerts go to and when (`AlertConfig`), the signals they
are raised from (`ThresholdSignal`), and configs stored by name with their throttle state.

`AlertConfig` and `ThresholdSignal` check themselves (`validate()`: a non-http(s) URL, a bad
e-mail address, an unknown channel, a negative threshold is a `ValueError`). A config stored by
name (`AlertConfigWriter(tx).save`, table `alert_configs`, never the webhook secret) keeps
`last_alert_at` / `alerts_sent_count` across processes; `AlertConfigReader(db)` reads it and the
threshold-signal history (table `threshold_signals`). The emitter lives in `alert_emitter`,
which re-exports these names.
"""
import re
import uuid
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from urllib.parse import urlsplit

from .dialect import for_update, tenant_lock
from .listing import page
from .models.alerts import StoredAlertConfig, StoredThresholdSignal
from .models.base import as_utc, new_id, utcnow
from .validation import (require_database, require_non_negative, require_tenant, require_text,
                         require_transaction)

ACCESS = "READ+WRITE"

SIGNAL_TYPES = ("near", "breach")
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


def require_header_text(value, name):
    """Non-empty text without control characters (it ends up in headers and subjects)."""
    require_text(value, name)
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"{name} must not contain control characters, got {value!r}")
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
            require_header_text(getattr(self, name), name)
        self.last_alert_at = as_utc(self.last_alert_at)
        if self.slack_channel is not None:
            require_header_text(self.slack_channel, "slack_channel")
        require_non_negative(self.near_threshold_percentage, "near_threshold_percentage")
        require_non_negative(self.min_alert_interval_seconds, "min_alert_interval_seconds")
        require_non_negative(self.max_alerts_per_run, "max_alerts_per_run", integer=True)
        require_non_negative(self.alerts_sent_count, "alerts_sent_count", integer=True)
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
            require_header_text(getattr(self, name), name)
        if self.signal_type not in SIGNAL_TYPES:
            raise ValueError(f"signal_type must be 'near' or 'breach', got {self.signal_type!r}")
        require_non_negative(self.current_value, "current_value")
        require_non_negative(self.threshold_value, "threshold_value")
        if self.percentage is not None:
            require_non_negative(self.percentage, "percentage")

    def mark_alert_sent(self, channels, now=None):
        """Record that `channels` carried the alert."""
        self.alert_sent = True
        self.alert_channels = list(channels)
        self.alert_sent_at = now or utcnow()


_CONFIG_COLUMNS = [f.name for f in fields(AlertConfig) if f.name != "webhook_secret"]


def _config_query(tenant_id, name):
    """The SELECT of the stored config row `name` of `tenant_id`."""
    require_tenant(tenant_id)
    require_text(name, "name")
    return StoredAlertConfig.select().where((StoredAlertConfig.tenant_id == tenant_id)
                                            & (StoredAlertConfig.name == name))


def _config_from_row(row, webhook_secret=None):
    """The AlertConfig a stored row holds (the secret, never stored, given by the caller)."""
    return AlertConfig(**{column: getattr(row, column) for column in _CONFIG_COLUMNS},
                       webhook_secret=webhook_secret)


class AlertConfigReader:
    """Stored alert configs and the threshold-signal history; only SELECTs."""

    ACCESS = "READ"

    def __init__(self, db):
        self.db = require_database(db)

    def get(self, tenant_id, name):
        """The config `name` of `tenant_id` as {name, updated_at, **AlertConfig.to_dict()};
        None if there is none."""
        row = next(iter(_config_query(tenant_id, name).execute(self.db)), None)
        if row is None:
            return None
        return {"name": row.name, **_config_from_row(row).to_dict(), "updated_at": row.updated_at}

    def list_signals(self, tenant_id, run_id=None, limit=50, since=None, until=None, offset=0):
        """The tenant's stored threshold signals (of one run, with `run_id`), newest first
        (window: listing.page)."""
        condition = StoredThresholdSignal.tenant_id == require_tenant(tenant_id)
        if run_id is not None:
            condition &= StoredThresholdSignal.run_id == run_id
        return list(page(StoredThresholdSignal.select().where(condition), StoredThresholdSignal.timestamp,
                         since, until, offset, limit).execute(self.db))


class AlertConfigWriter:
    """Stores named alert configs; writes in the caller's transaction, never commits."""

    ACCESS = "WRITE"

    def __init__(self, tx):
        self.tx = require_transaction(tx, check_open=False)

    def save(self, tenant_id, name, config, now=None):
        """Store `config` (an AlertConfig of tenant `tenant_id`) as `name`: its settings replace
        a stored config's, whose throttling state is kept (one INSERT ... ON CONFLICT on the
        (tenant, name) key, so concurrent saves never collide). The webhook secret is not stored."""
        self.tx.require_open()
        config.validate()
        if config.tenant_id != require_tenant(tenant_id):
            raise ValueError(f"config of tenant {config.tenant_id!r} saved for tenant {tenant_id!r}")
        now = now or utcnow()
        settings = {column: getattr(config, column) for column in _CONFIG_COLUMNS
                    if column not in ("last_alert_at", "alerts_sent_count")}
        (StoredAlertConfig.insert(id=new_id(), name=name, created_at=now, updated_at=now, **settings)
         .on_conflict(conflict_target=[StoredAlertConfig.tenant_id, StoredAlertConfig.name],
                      preserve=[getattr(StoredAlertConfig, column) for column in (*settings, "updated_at")])
         .execute(self.tx.db))

    def load(self, tenant_id, name, webhook_secret=None):
        """(the AlertConfig stored as `name` for `tenant_id`, its row id), read inside the
        transaction and locked (`dialect.for_update`) so its throttling state cannot change
        under the caller until it ends; LookupError when there is none. The secret, never
        stored, is given by the caller."""
        self.tx.require_open()
        row = next(iter(for_update(_config_query(tenant_id, name), self.tx.db).execute(self.tx.db)), None)
        if row is None:
            raise LookupError(f"no alert config {name!r} for tenant {tenant_id!r}")
        return _config_from_row(row, webhook_secret), row.id

    def near_alerts_of_run(self, signal):
        """How many near-threshold alerts went out for the signal's run and policy (on
        PostgreSQL the tenant's emits for that run and policy wait here for each other, so two
        stored configs cannot both count none and both alert)."""
        tenant_lock(self.tx, f"near alerts of {signal.policy_id} in {signal.run_id}", signal.tenant_id)
        return (StoredThresholdSignal.select().where(
            (StoredThresholdSignal.tenant_id == signal.tenant_id)
            & (StoredThresholdSignal.run_id == signal.run_id)
            & (StoredThresholdSignal.policy_id == signal.policy_id)
            & (StoredThresholdSignal.signal_type == "near") & StoredThresholdSignal.alert_sent)
            .count(self.tx.db))

    def record(self, config_id, name, config, signal, action_taken, now):
        """Store the config's new throttling state and the signal (sent or throttled)."""
        self.tx.require_open()
        (StoredAlertConfig.update(last_alert_at=config.last_alert_at,
                                  alerts_sent_count=config.alerts_sent_count, updated_at=now)
         .where(StoredAlertConfig.id == config_id).execute(self.tx.db))
        StoredThresholdSignal.insert(
            id=signal.signal_id, tenant_id=signal.tenant_id, config_name=name, run_id=signal.run_id,
            policy_id=signal.policy_id, metric=signal.metric, current_value=signal.current_value,
            threshold_value=signal.threshold_value, signal_type=signal.signal_type,
            percentage=signal.percentage, action_taken=action_taken, step_index=signal.step_index,
            timestamp=signal.timestamp, alert_sent=signal.alert_sent,
            alert_channels=list(signal.alert_channels), alert_sent_at=signal.alert_sent_at,
        ).execute(self.tx.db)
