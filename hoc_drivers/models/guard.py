"""Kill switches (guard_write_driver)."""
from peewee import BooleanField, CharField, TextField

from .base import BaseModel, UtcDateTimeField, new_id, utcnow

ENTITY_TYPES = ("tenant", "key")


class KillSwitchState(BaseModel):
    """Freeze state of a tenant or an API key; one row per (tenant, entity type, entity)."""

    id = CharField(primary_key=True, default=new_id)
    tenant_id = CharField()
    entity_type = CharField()
    entity_id = CharField()
    is_frozen = BooleanField(default=False)
    frozen_at = UtcDateTimeField(null=True)
    frozen_by = CharField(null=True)
    freeze_reason = TextField(null=True)
    auto_triggered = BooleanField(default=False)
    trigger_type = CharField(null=True)
    unfrozen_at = UtcDateTimeField(null=True)
    unfrozen_by = CharField(null=True)
    created_at = UtcDateTimeField(default=utcnow)
    updated_at = UtcDateTimeField(default=utcnow)

    class Meta:
        table_name = "killswitch_state"
        indexes = (
            (("tenant_id", "entity_type", "entity_id"), True),
            (("is_frozen", "tenant_id"), False),
        )


MODELS = [KillSwitchState]
