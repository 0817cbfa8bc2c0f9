"""Discovery Ledger: aggregating signal records, with no commit of its own."""
ACCESS = "READ+WRITE"
