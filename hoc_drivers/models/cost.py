"""Worker runs, the five M26 cost tables and limit breaches (worker_write_service_async, cross_domain).

Columns follow the server edition (worker_runs: migrations 036/053/073; the M26 cost tables:
migration 046; limit_breaches: migration 088). Timestamps are aware UTC, money in cents.
The M26 cost tables also carry the server edition's indexes and database-level defaults (flags,
thresholds, counters, creation / update times), so a plain INSERT that leaves those columns out
works as it does there; a time SQLite fills in has the text form `UtcDateTimeField` stores.
"""
from peewee import BooleanField, Check, DateField, FloatField, ForeignKeyField, IntegerField

from ..dialect import immutable_columns_trigger, literal_default, now_default
from .base import BaseModel, CharField, DecimalTextField, JSONField, TextField, UtcDateTimeField, new_id, utcnow
from .runs import Incident, Run

WORKER_RUN_STATUSES = ("queued", "running", "completed", "failed", "crashed")
TERMINAL_WORKER_RUN_STATUSES = ("completed", "failed", "crashed")
# Result columns a terminal worker run may never change (the server edition's PB-S1 trigger).
IMMUTABLE_WORKER_RUN_COLUMNS = ("status", "success", "error", "output_json", "total_tokens",
                                "cost_cents", "started_at", "completed_at")
BREACH_TYPES = ("BREACHED", "EXHAUSTED", "THROTTLED", "VIOLATED")

_IMMUTABLE_GUARD = immutable_columns_trigger(
    "worker_runs_immutable_guard", "worker_runs", TERMINAL_WORKER_RUN_STATUSES,
    IMMUTABLE_WORKER_RUN_COLUMNS, "TRUTH_VIOLATION: Cannot mutate completed/failed/crashed worker_run")


def _defaulted(field_class, value, **kwargs):
    """A `field_class` field whose default `value` both Peewee and SQLite apply (the server
    edition's server_default), so a plain INSERT that leaves the column out works."""
    return field_class(default=value, constraints=[literal_default(value)], **kwargs)


def _timestamp():
    """A creation / update time: now, from Peewee or (a plain INSERT) from SQLite."""
    return UtcDateTimeField(default=utcnow, constraints=[now_default()])


class WorkerRun(BaseModel):
    """A worker run; once completed, failed or crashed its result columns are immutable."""

    id = CharField(primary_key=True, default=new_id)
    tenant_id = CharField()
    worker_id = CharField(index=True)
    api_key_id = CharField(null=True)
    user_id = CharField(null=True)
    task = TextField()
    input_json = JSONField(null=True)
    status = CharField(default="queued", index=True)
    success = BooleanField(null=True)
    error = TextField(null=True)
    output_json = JSONField(null=True)
    replay_token_json = JSONField(null=True)
    total_tokens = IntegerField(null=True)
    total_latency_ms = IntegerField(null=True)
    stages_completed = IntegerField(null=True)
    recoveries = IntegerField(default=0)
    policy_violations = IntegerField(default=0)
    cost_cents = IntegerField(null=True)
    parent_run_id = CharField(null=True, index=True)
    attempt = IntegerField(default=1)
    is_retry = BooleanField(default=False, index=True)
    created_at = UtcDateTimeField(default=utcnow, index=True)
    started_at = UtcDateTimeField(null=True)
    completed_at = UtcDateTimeField(null=True)
    is_synthetic = BooleanField(default=False)
    synthetic_scenario_id = CharField(null=True)

    # Trigger name -> its CREATE statement (init_database creates it; schema parity checks it).
    TRIGGERS = {"worker_runs_immutable_guard": _IMMUTABLE_GUARD}

    class Meta:
        table_name = "worker_runs"
        indexes = ((("tenant_id", "created_at"), False),)


class FeatureTag(BaseModel):
    """A cost-attribution tag of a tenant (e.g. "customer_support.chat")."""

    id = CharField(primary_key=True, default=new_id)
    tenant_id = CharField()
    tag = CharField(index=True)
    display_name = CharField()
    description = TextField(null=True)
    budget_cents = IntegerField(null=True)
    is_active = _defaulted(BooleanField, True)
    created_at = _timestamp()
    updated_at = _timestamp()

    class Meta:
        table_name = "feature_tags"
        indexes = ((("tenant_id", "tag"), True),)


class CostRecord(BaseModel):
    """The cost of one LLM call."""

    id = CharField(primary_key=True, default=new_id)
    tenant_id = CharField()
    user_id = CharField(null=True, index=True)
    feature_tag = CharField(null=True, index=True)
    request_id = CharField(null=True)
    workflow_id = CharField(null=True)
    skill_id = CharField(null=True)
    model = CharField()
    input_tokens = _defaulted(IntegerField, 0)
    output_tokens = _defaulted(IntegerField, 0)
    cost_cents = FloatField()
    created_at = _timestamp()

    class Meta:
        table_name = "cost_records"
        indexes = (
            (("tenant_id", "created_at"), False),
            (("tenant_id", "feature_tag"), False),
            (("tenant_id", "user_id"), False),
        )


class CostAnomaly(BaseModel):
    """A detected cost anomaly or budget advisory."""

    id = CharField(primary_key=True, default=new_id)
    tenant_id = CharField()
    anomaly_type = CharField(index=True)
    severity = CharField(index=True)
    entity_type = CharField()
    entity_id = CharField(null=True)
    current_value_cents = FloatField()
    expected_value_cents = FloatField()
    deviation_pct = FloatField()
    threshold_pct = _defaulted(FloatField, 200.0)
    message = TextField()
    incident_id = CharField(null=True, index=True)
    action_taken = CharField(null=True)
    resolved = _defaulted(BooleanField, False)
    resolved_at = UtcDateTimeField(null=True)
    metadata_json = JSONField(null=True, column_name="metadata")
    detected_at = _timestamp()
    derived_cause = CharField(null=True)
    breach_count = _defaulted(IntegerField, 1, null=True)
    snapshot_id = CharField(null=True, index=True)
    baseline_id = CharField(null=True)

    class Meta:
        table_name = "cost_anomalies"
        indexes = ((("tenant_id", "detected_at"), False),)


class CostBudget(BaseModel):
    """A daily / monthly spend budget for a tenant, a feature tag or a user."""

    id = CharField(primary_key=True, default=new_id)
    tenant_id = CharField()
    budget_type = CharField()
    entity_id = CharField(null=True)
    daily_limit_cents = IntegerField(null=True)
    monthly_limit_cents = IntegerField(null=True)
    warn_threshold_pct = _defaulted(IntegerField, 80)
    hard_limit_enabled = _defaulted(BooleanField, False)
    is_active = _defaulted(BooleanField, True)
    created_at = _timestamp()
    updated_at = _timestamp()

    class Meta:
        table_name = "cost_budgets"
        indexes = ((("tenant_id", "budget_type", "entity_id"), True),)


class CostDailyAggregate(BaseModel):
    """Spend of one UTC day per tenant, feature tag, user and model."""

    id = CharField(primary_key=True, default=new_id)
    tenant_id = CharField()
    date = DateField()
    feature_tag = CharField(null=True)
    user_id = CharField(null=True)
    model = CharField(null=True)
    total_cost_cents = _defaulted(FloatField, 0.0)
    request_count = _defaulted(IntegerField, 0)
    total_input_tokens = _defaulted(IntegerField, 0)
    total_output_tokens = _defaulted(IntegerField, 0)
    created_at = _timestamp()
    updated_at = _timestamp()

    class Meta:
        table_name = "cost_daily_aggregates"
        indexes = ((("tenant_id", "date", "feature_tag", "user_id", "model"), True),
                   (("tenant_id", "feature_tag", "date"), False))


class LimitBreach(BaseModel):
    """A policy limit breached, exhausted, throttled or violated; values are exact Decimals."""

    id = CharField(primary_key=True, default=new_id)
    tenant_id = CharField()
    limit_id = CharField(index=True)
    run = ForeignKeyField(Run, column_name="run_id", null=True, on_delete="SET NULL")
    incident = ForeignKeyField(Incident, column_name="incident_id", null=True, on_delete="SET NULL")
    breach_type = CharField(constraints=[Check("breach_type IN ({})".format(
        ", ".join(f"'{t}'" for t in BREACH_TYPES)))])
    value_at_breach = DecimalTextField(null=True)
    limit_value = DecimalTextField()
    details = JSONField(null=True)
    breached_at = UtcDateTimeField(default=utcnow)
    recovered_at = UtcDateTimeField(null=True)

    class Meta:
        table_name = "limit_breaches"
        indexes = ((("tenant_id", "breached_at"), False),)


MODELS = [WorkerRun, FeatureTag, CostRecord, CostAnomaly, CostBudget, CostDailyAggregate,
          LimitBreach]
