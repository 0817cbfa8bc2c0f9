"""Kill switches (guard_write_driver)."""

MODELS = []
