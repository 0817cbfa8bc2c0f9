"""Governance Signals: explicit BLOCKED / WARN / CLEAN signals per scope."""
ACCESS = "READ+WRITE"
