"""Argument checks shared by the drivers: a clear ValueError naming the argument, before any
write. Standard library only, so the CLI can import it without loading a driver."""

MAX_LIMIT = 10_000  # rows one list call returns at most (the CLI's --limit has the same bound)


def require_text(value, name):
    """`value` when it is a non-empty string, else ValueError naming `name`."""
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} is required (a non-empty string)")
    return value


def require_limit(limit, allow_none=False):
    """`limit` when it is an integer from 1 to MAX_LIMIT (or None, with `allow_none`), else
    ValueError."""
    if limit is None and allow_none:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIMIT:
        also = " or None" if allow_none else ""
        raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}{also}, got {limit!r}")
    return limit
