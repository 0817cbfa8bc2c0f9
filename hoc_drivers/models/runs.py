"""Runs, traces, incidents, policy evaluations and the event outbox (the run-completion domain)."""
from peewee import BooleanField, FloatField, ForeignKeyField, IntegerField

from .base import (BaseModel, CharField, DecimalTextField, JSONField, TextField, UtcDateTimeField, insertion_seq,
                   new_id, unique_id, utcnow)


class Run(BaseModel):
    """An agent run; its idempotency key is unique per tenant."""

    id = CharField(primary_key=True, default=new_id)
    tenant_id = CharField()
    agent_id = CharField(null=True)
    idempotency_key = CharField(null=True)
    request_fingerprint = CharField(null=True)
    status = CharField(default="queued")
    incident_count = IntegerField(default=0)
    created_at = UtcDateTimeField(default=utcnow)
    updated_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "runs"
        # (tenant, created_at) also serves lookups by tenant alone, and today's run count.
        indexes = ((("tenant_id", "idempotency_key"), True), (("tenant_id", "created_at"), False))


class Trace(BaseModel):
    """An execution trace of a run (`aos_traces`)."""

    trace_id = CharField(primary_key=True)
    tenant_id = CharField(index=True)
    run_id = CharField(index=True)
    status = CharField(default="running")
    created_at = UtcDateTimeField(default=utcnow)
    completed_at = UtcDateTimeField(null=True)
    incident_id = CharField(null=True)

    class Meta:
        table_name = "aos_traces"


class Incident(BaseModel):
    """A governance incident; one per failed run and one per (tenant, cost anomaly)."""

    seq = insertion_seq()
    id = unique_id(new_id)
    tenant_id = CharField()
    title = CharField()
    severity = CharField()
    status = CharField(default="open")
    trigger_type = CharField()
    trigger_value = TextField(null=True)
    started_at = UtcDateTimeField(default=utcnow)
    calls_affected = IntegerField(default=0)
    cost_delta_cents = DecimalTextField(default=0)
    cost_impact = DecimalTextField(null=True)  # currency units, 2 decimals (cost anomalies)
    auto_action = CharField(null=True)
    action_details = JSONField(null=True)
    policy_id = CharField(null=True)
    call_id = CharField(null=True)
    killswitch_id = CharField(null=True)
    ended_at = UtcDateTimeField(null=True)
    duration_seconds = IntegerField(null=True)
    acknowledged_at = UtcDateTimeField(null=True)
    resolved_at = UtcDateTimeField(null=True)
    resolved_by = CharField(null=True)
    source_run_id = CharField(null=True)
    source_type = CharField(default="killswitch")
    anomaly_id = CharField(null=True)
    category = CharField(null=True)
    description = TextField(null=True)
    error_code = CharField(null=True)
    error_message = TextField(null=True)
    impact_scope = CharField(null=True)
    affected_agent_id = CharField(null=True)
    affected_count = IntegerField(default=1)
    cause_type = CharField(default="HUMAN")
    lifecycle_state = CharField(default="ACTIVE")
    domain = CharField(null=True)
    is_synthetic = BooleanField(default=False)
    synthetic_scenario_id = CharField(null=True)
    alert_sent = BooleanField(default=False)
    alert_sent_at = UtcDateTimeField(null=True)
    created_at = UtcDateTimeField(default=utcnow)
    updated_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "incidents"
        indexes = (
            (("tenant_id", "status"), False),
            (("tenant_id", "created_at"), False),
            (("tenant_id", "source_type", "source_run_id"), True),
            (("tenant_id", "anomaly_id"), True),
        )


class IncidentEvent(BaseModel):
    """A timeline event of an incident."""

    seq = insertion_seq()
    id = unique_id(new_id)
    incident = ForeignKeyField(Incident, backref="events", column_name="incident_id", on_delete="CASCADE")
    tenant_id = CharField()
    event_type = CharField()
    description = TextField()
    data = JSONField(null=True)
    created_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "incident_events"
        indexes = ((("tenant_id", "incident_id"), False),)


class PreventionRecord(BaseModel):
    """A policy evaluation of a run (the server edition's `prevention_records`)."""

    id = CharField(primary_key=True, default=new_id)
    tenant_id = CharField()
    policy_id = CharField()
    pattern_id = CharField()
    original_incident_id = CharField()
    blocked_incident_id = CharField()
    run_id = CharField(null=True, index=True)
    outcome = CharField()
    signature_match_confidence = FloatField()
    calls_evaluated = IntegerField(default=0)
    is_synthetic = BooleanField(default=False)
    synthetic_scenario_id = CharField(null=True)
    created_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "prevention_records"
        indexes = (
            (("tenant_id", "policy_id", "run_id"), True),
            (("tenant_id", "created_at"), False),
        )


class Event(BaseModel):
    """The transactional outbox: written in the transaction, published after commit."""

    id = CharField(primary_key=True, default=new_id)
    tenant_id = CharField(null=True)
    topic = CharField()
    payload = JSONField()
    created_at = UtcDateTimeField(default=utcnow)
    published_at = UtcDateTimeField(null=True, index=True)

    class Meta:
        table_name = "events"


MODELS = [Run, Trace, Incident, IncidentEvent, PreventionRecord, Event]
