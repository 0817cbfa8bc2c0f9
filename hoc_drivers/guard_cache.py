"""Guard Cache: cachetools TTL caches for the guard console, invalidated after commit."""
ACCESS = "READ"
