"""Worker Write Service: worker runs and cost records (sync service + awaitable facade)."""
ACCESS = "READ+WRITE"
