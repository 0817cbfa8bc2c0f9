"""Cross-Domain Governance Functions (mandatory): cost-anomaly incidents and limit breaches."""
ACCESS = "WRITE"
