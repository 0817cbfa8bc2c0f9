"""Alert queue and UI notifications (alert_driver, alert_emitter, alert_sender)."""
import json

from peewee import BooleanField, FloatField, IntegerField

from ..validation import json_encoder
from .base import BaseModel, CharField, JSONField, TextField, UtcDateTimeField, insertion_seq, new_id, unique_id, utcnow

ALERT_STATUSES = ("pending", "sent", "failed")
ALERT_CHANNELS = ("alertmanager", "webhook", "slack", "email")


_canonical = json_encoder(sort_keys=True, separators=(",", ":"), allow_nan=False)


def canonical_json(value):
    """The one JSON text of `value`: sorted keys, no spaces, no NaN (what a webhook signs)."""
    return _canonical(value)


class CanonicalJSONField(TextField):
    """JSON stored verbatim as canonical text, so the bytes signed at enqueue are the bytes sent."""

    def db_value(self, value):
        """Python value -> canonical JSON text (ValueError for NaN or non-JSON values)."""
        if value is None:
            return None
        try:
            return _canonical(value)  # canonical_json's text, without its call
        except (TypeError, ValueError, RecursionError) as exc:  # not JSON, NaN or infinite, or cyclic
            raise ValueError(f"{self.name} must be JSON-serialisable: {exc}") from None

    def python_value(self, value):
        """Stored text -> Python value."""
        return None if value is None else json.loads(value)


class AlertQueueItem(BaseModel):
    """One alert waiting for (or done with) delivery: the `costsim_alert_queue` table.

    `channel` and `destination` say where it goes (ours: the server edition only posts to
    Alertmanager). `claim_token` marks a sender's lease: a claimed alert's `next_attempt_at` is
    pushed past the lease, so a crashed sender's alert becomes due again when the lease ends.
    """

    seq = insertion_seq()
    id = unique_id(new_id)
    tenant_id = CharField(null=True)
    payload = CanonicalJSONField()
    alert_type = CharField(null=True)
    circuit_breaker_name = CharField(null=True)
    incident_id = CharField(null=True)
    channel = CharField(default="alertmanager")
    destination = CanonicalJSONField(null=True)
    status = CharField(default="pending")
    attempts = IntegerField(default=0)
    max_attempts = IntegerField(default=10)
    last_attempt_at = UtcDateTimeField(null=True)
    next_attempt_at = UtcDateTimeField(default=utcnow)
    last_error = TextField(null=True)
    sent_at = UtcDateTimeField(null=True)
    claim_token = CharField(null=True)
    created_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "costsim_alert_queue"
        indexes = (
            (("status", "next_attempt_at"), False),
            (("status", "created_at"), False),
        )

    def to_dict(self):
        """JSON-ready summary (no payload, no destination: those may hold addresses)."""
        return {"id": self.id, "tenant_id": self.tenant_id, "alert_type": self.alert_type,
                "channel": self.channel, "circuit_breaker_name": self.circuit_breaker_name,
                "incident_id": self.incident_id, "status": self.status,
                "attempts": self.attempts, "max_attempts": self.max_attempts,
                "last_error": self.last_error,
                "next_attempt_at": self.next_attempt_at and self.next_attempt_at.isoformat(),
                "sent_at": self.sent_at and self.sent_at.isoformat(),
                "created_at": self.created_at and self.created_at.isoformat()}


class Notification(BaseModel):
    """A UI notification the desktop tool shows: one per threshold alert on the UI channel."""

    seq = insertion_seq()
    id = unique_id(new_id)
    tenant_id = CharField()
    notification_type = CharField()
    title = CharField()
    run_id = CharField(null=True)
    policy_id = CharField(null=True)
    metric = CharField(null=True)
    current_value = FloatField(null=True)
    threshold_value = FloatField(null=True)
    percentage = FloatField(null=True)
    action_taken = CharField(null=True)
    data = JSONField(null=True)
    created_at = UtcDateTimeField(default=utcnow)
    read_at = UtcDateTimeField(null=True)

    class Meta:
        table_name = "notifications"
        indexes = ((("tenant_id", "created_at"), False),)


class StoredAlertConfig(BaseModel):
    """A named alert config of a tenant (`alerts config set`), with its throttling state.

    The columns are `alert_emitter.AlertConfig`'s fields; the webhook secret is never stored.
    """

    id = CharField(primary_key=True, default=new_id)
    tenant_id = CharField()
    name = CharField()
    policy_id = CharField()
    near_threshold_enabled = BooleanField(default=True)
    near_threshold_percentage = FloatField(default=80)
    breach_alert_enabled = BooleanField(default=True)
    enabled_channels = JSONField()
    webhook_url = TextField(null=True)
    email_recipients = JSONField()
    slack_webhook_url = TextField(null=True)
    slack_channel = CharField(null=True)
    min_alert_interval_seconds = FloatField(default=60)
    max_alerts_per_run = IntegerField(default=10)
    last_alert_at = UtcDateTimeField(null=True)
    alerts_sent_count = IntegerField(default=0)
    created_at = UtcDateTimeField(default=utcnow)
    updated_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "alert_configs"
        indexes = ((("tenant_id", "name"), True),)


class StoredThresholdSignal(BaseModel):
    """The history of threshold signals emitted with a stored config (one row per signal)."""

    seq = insertion_seq()
    id = unique_id()  # the signal id (SIG-...)
    tenant_id = CharField()
    config_name = CharField()
    run_id = CharField()
    policy_id = CharField()
    metric = CharField()
    current_value = FloatField()
    threshold_value = FloatField()
    signal_type = CharField()
    percentage = FloatField()
    action_taken = CharField(null=True)
    step_index = IntegerField(null=True)
    timestamp = UtcDateTimeField()
    alert_sent = BooleanField(default=False)
    alert_channels = JSONField()
    alert_sent_at = UtcDateTimeField(null=True)

    class Meta:
        table_name = "threshold_signals"
        indexes = ((("tenant_id", "run_id", "policy_id"), False),
                   (("tenant_id", "timestamp"), False))


MODELS = [AlertQueueItem, Notification, StoredAlertConfig, StoredThresholdSignal]
