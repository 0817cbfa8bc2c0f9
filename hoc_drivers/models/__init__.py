"""All tables, one module per domain; `ALL_MODELS` in creation order."""
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

