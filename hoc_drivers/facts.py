"""Facts a writer records on its transaction (`tx.note(fact)`) about what it changed.

Writers only state what happened; they never call the code that reacts. After COMMIT (never
after a rollback) the coordinator hands each distinct fact to the subscribers of that database
(`bus.subscribe`): the guard cache drops the tenant's entries, a serving
alert sender wakes up.

On PostgreSQL the facts also reach the other processes (and hosts) using the database: the
coordinator sends each distinct one as a notification inside the transaction (`to_payloads`),
PostgreSQL delivers it on COMMIT (a rollback drops it), and each process's listener (`pg_guard`)
hands it, rebuilt with `from_payload`, to that process's subscribers, unless the process sent
it itself (its subscribers had it after its COMMIT). When the listener may have missed some (it
lost its connection), it hands them `FactsMissed()` instead.
"""
import json
import os
import secrets
from dataclasses import astuple, dataclass
from functools import lru_cache

# The guard console's read models (SPEC §3), as a GuardStateChanged endpoint names them.
STATUS = "status"
SNAPSHOT = "snapshot"
INCIDENTS = "incidents"


@dataclass(frozen=True)
class GuardStateChanged:
    """Tenant `tenant_id`'s guard read models changed (all of them, or only `endpoint`'s)."""

    tenant_id: str
    endpoint: str | None = None


@lru_cache(maxsize=4096)
def tenant_changed(tenant_id):
    """`GuardStateChanged(tenant_id)`, made once per tenant: a fact is immutable, so hot writers
    note one shared instance instead of building one per write."""
    return GuardStateChanged(tenant_id)


@dataclass(frozen=True)
class AlertQueued:
    """An alert was queued or revived and may be due for delivery."""


@dataclass(frozen=True)
class FactsMissed:
    """Facts committed by other processes may have gone unseen (the process's listener lost
    its connection to PostgreSQL): assume anything changed."""


# The facts other processes learn of (by their class name); FactsMissed is local.
_SHARED = {fact_type.__name__: fact_type for fact_type in (GuardStateChanged, AlertQueued)}


_PROGRAM = secrets.token_hex(8)  # with the pid: this process among all hosts' (a fork differs)


def origin():
    """This process's mark on the notifications it sends."""
    return f"{_PROGRAM}.{os.getpid()}"


@lru_cache(maxsize=4096)
def _as_json(fact):
    return json.dumps([type(fact).__name__, *astuple(fact)], separators=(",", ":"))


def to_payloads(facts):
    """One notification text per distinct fact of `facts`: this process's `origin()`, a space,
    then the fact as JSON (its class name, then its fields in order)."""
    mark = origin()
    return [f"{mark} {_as_json(fact)}" for fact in dict.fromkeys(facts)]


def from_payload(text):
    """(origin, fact) from a text of `to_payloads`; ValueError for anything else."""
    mark, _, fact = text.partition(" ")
    try:
        name, *values = json.loads(fact)
        if not all(value is None or isinstance(value, str) for value in values):
            raise TypeError("a fact's fields are texts or null")
        return mark, _SHARED[name](*values)
    except (TypeError, KeyError, RecursionError) as error:  # anyone may NOTIFY the channel
        raise ValueError(f"not a fact: {text[:200]!r}") from error
