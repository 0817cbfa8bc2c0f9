"""The discovery ledger (ledger)."""

MODELS = []
