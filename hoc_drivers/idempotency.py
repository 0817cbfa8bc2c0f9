"""Idempotency keys: run lookup, expiry and an atomic claim-or-get per tenant."""
ACCESS = "READ+WRITE"
