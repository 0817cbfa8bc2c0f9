"""All tables, one module per domain; `ALL_MODELS` in creation order; `create_schema`."""
from peewee import SchemaManager

from .. import dialect

from . import alerts, cost, decisions, governance, guard, ledger, runs

ALL_MODELS = [
    *runs.MODELS,
    *guard.MODELS,
    *governance.MODELS,
    *cost.MODELS,
    *alerts.MODELS,
    *decisions.MODELS,
    *ledger.MODELS,
]



def create_schema(db, models=tuple(ALL_MODELS), safe=True):
    """Create `models`' tables, indexes and triggers on `db` (missing ones only, with `safe`).
    On a guarded database, call it inside a coordinator transaction."""
    for sql in dialect.SCHEMA_FUNCTIONS[dialect.of(db)]:
        db.execute_sql(sql)
    for model in models:
        SchemaManager(model, db).create_all(safe=safe)
        for statements in getattr(model, "TRIGGERS", {}).values():
            for sql in statements[dialect.of(db)]:
                db.execute_sql(sql)
