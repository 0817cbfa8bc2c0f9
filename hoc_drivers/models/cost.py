"""Worker runs and the five M26 cost tables (worker_write_service_async, cross_domain)."""

MODELS = []
