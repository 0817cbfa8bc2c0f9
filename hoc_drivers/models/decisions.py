"""Decision records, policy decisions and the CARE kill switch (decisions)."""
from enum import Enum

from peewee import BooleanField, FloatField

from .base import BaseModel, CharField, JSONField, TextField, UtcDateTimeField, insertion_seq, unique_id, utcnow


def _vocabulary(name, doc, values):
    """A str enum of `values` (space-separated), each member named as its value in upper case."""
    enum = Enum(name, [(value.upper(), value) for value in values.split()], module="hoc_drivers.decisions",
                type=str)
    enum.__doc__ = doc
    return enum


# The vocabulary of SPEC §8 (the enum values are the stored strings).
DecisionType = _vocabulary("DecisionType", "What kind of choice was made.", """routing recovery memory policy
    budget budget_enforcement policy_pre_check recovery_evaluation care_routing_optimized""")
DecisionSource = _vocabulary("DecisionSource", "Who decided.", "human system hybrid")
DecisionTrigger = _vocabulary("DecisionTrigger", "Why the decision happened.", "explicit autonomous reactive")
DecisionOutcome = _vocabulary("DecisionOutcome", "What was decided.", """selected rejected skipped
    blocked none execution_halted policy_blocked policy_unavailable recovery_applied
    recovery_suggested recovery_skipped baseline_selected optimized_selected""")
CausalRole = _vocabulary("CausalRole", "When in the run's lifecycle the decision was made.", "pre_run in_run post_run")


class DecisionRecordRow(BaseModel):
    """One appended decision record (`decision_records`).

    `idempotency_key` is set only by the emitters that may write once per key (budget
    enforcement, policy pre-check, recovery evaluation, CARE optimisation); its unique index
    is what keeps concurrent callers to one row. NULL keys never conflict.
    """

    seq = insertion_seq()
    decision_id = unique_id()
    decision_type = CharField()
    decision_source = CharField()
    decision_trigger = CharField()
    decision_inputs = JSONField(default=dict)
    decision_outcome = CharField()
    decision_reason = TextField(null=True)
    run_id = CharField(null=True)
    workflow_id = CharField(null=True)
    tenant_id = CharField(default="default")
    request_id = CharField(null=True)
    causal_role = CharField(default="in_run")
    decided_at = UtcDateTimeField(default=utcnow)
    details = JSONField(default=dict)
    idempotency_key = CharField(null=True, unique=True)

    class Meta:
        table_name = "decision_records"
        indexes = (
            (("tenant_id", "run_id"), False),
            (("tenant_id", "request_id"), False),
            (("tenant_id", "decided_at"), False),
        )


class PolicyDecision(BaseModel):
    """The mirror of a policy-like decision record (`policy_decisions`; id = decision_id)."""

    id = CharField(primary_key=True)
    tenant_id = CharField()
    run_id = CharField(null=True)
    policy_type = CharField()
    decision = CharField()
    rationale = TextField(default="")
    is_synthetic = BooleanField(default=False)
    synthetic_scenario_id = CharField(null=True)
    capture_confidence_score = FloatField(null=True)
    created_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "policy_decisions"
        indexes = ((("tenant_id", "run_id"), False),)


class DecisionSetting(BaseModel):
    """A persisted setting of the decision sink, such as the CARE optimisation kill switch."""

    key = CharField(primary_key=True)
    value = JSONField()
    updated_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "decision_settings"


MODELS = [DecisionRecordRow, PolicyDecision, DecisionSetting]
