"""Kill switches (guard_write_driver): each switch's state and the history of its changes."""
from peewee import BooleanField

from ..verdicts import frozen_at
from .base import BaseModel, CharField, TextField, UtcDateTimeField, insertion_seq, new_id, unique_id, utcnow

SWITCH_ACTIONS = ("freeze", "unfreeze")


class KillSwitchState(BaseModel):
    """Freeze state of a tenant or an API key; one row per (tenant, entity type, entity).

    A timed freeze has `frozen_until`: from then on the switch counts as unfrozen although
    `is_frozen` is still stored True (readers compare `frozen_until` with now).
    """

    seq = insertion_seq()
    id = unique_id(new_id)
    tenant_id = CharField()
    entity_type = CharField()
    entity_id = CharField()
    is_frozen = BooleanField(default=False)
    frozen_at = UtcDateTimeField(null=True)
    frozen_by = CharField(null=True)
    freeze_reason = TextField(null=True)
    frozen_until = UtcDateTimeField(null=True)
    auto_triggered = BooleanField(default=False)
    trigger_type = CharField(null=True)
    unfrozen_at = UtcDateTimeField(null=True)
    unfrozen_by = CharField(null=True)
    unfreeze_reason = TextField(null=True)
    created_at = UtcDateTimeField(default=utcnow)
    updated_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "killswitch_state"
        indexes = (
            (("tenant_id", "entity_type", "entity_id"), True),
            (("is_frozen", "tenant_id"), False),
        )

    @classmethod
    def frozen_where(cls, now):
        """SQL condition: the switch is frozen at `now` (frozen, and its end time not reached)."""
        return cls.is_frozen & (cls.frozen_until.is_null() | (cls.frozen_until > now))

    def is_frozen_at(self, now):
        """True when this switch is frozen at `now` (a timed freeze ends at `frozen_until`)."""
        return frozen_at(self.is_frozen, self.frozen_until, now)


class KillSwitchEvent(BaseModel):
    """One freeze or unfreeze of a kill switch: who, why, when (and until when); never updated."""

    seq = insertion_seq()
    id = unique_id(new_id)
    switch_id = CharField()
    tenant_id = CharField()
    entity_type = CharField()
    entity_id = CharField()
    action = CharField()
    actor = CharField()
    reason = TextField(null=True)
    until = UtcDateTimeField(null=True)
    trigger_type = CharField(null=True)
    created_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "killswitch_events"
        indexes = ((("tenant_id", "entity_type", "entity_id", "created_at"), False),)


MODELS = [KillSwitchState, KillSwitchEvent]
