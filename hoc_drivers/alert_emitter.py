"""Alert Emitter: near-threshold and breach alerts through UI, webhook, Slack and e-mail."""
ACCESS = "READ+WRITE"
