"""Guard Write Driver: kill switch and incident writes, inside the caller's transaction."""
ACCESS = "WRITE"
