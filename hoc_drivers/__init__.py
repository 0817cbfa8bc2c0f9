"""hoc-drivers: the embedded, sync-first SQLite edition of the governance drivers layer."""
