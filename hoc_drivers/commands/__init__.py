"""The CLI's command groups, one module each; `cli.py` loads a module when its command runs."""
