"""Governance signals (governance_signal_driver)."""

MODELS = []
