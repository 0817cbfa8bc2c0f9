"""Alert queue, notifications and alert configs (alert_driver, alert_emitter)."""

MODELS = []
