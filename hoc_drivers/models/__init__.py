"""All tables, one module per domain; `ALL_MODELS` in creation order and `bind(db)`."""
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


def bind(db):
    """Bind every model to `db` (the database most recently opened by this process)."""
    db.bind(ALL_MODELS, bind_refs=False, bind_backrefs=False)
    return db
