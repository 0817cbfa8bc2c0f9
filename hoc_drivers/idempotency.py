"""Idempotency keys: run lookup, expiry and an atomic claim-or-get per tenant.

A client sends an idempotency key with a request; the key is unique per tenant (index on
runs (tenant_id, idempotency_key)), and every lookup needs the tenant.

Expiry rule: a key is valid for setting `idempotency.ttl_seconds` (env IDEMPOTENCY_TTL_SECONDS,
default 86,400) from its
run's `created_at`: valid while its age is below the TTL, expired from the moment its age
reaches it (`age >= ttl`; at created_at + TTL - 1 µs valid, at exactly created_at + TTL
expired). **(ours)** The server edition expires a key one step later, only when its age is
over the TTL (`age > ttl`, so a key exactly TTL old is still valid there); here a deadline
reached is a deadline passed, the rule of a governance signal expiring exactly now (SPEC §6)
and of an alert due at its `next_attempt_at` (SPEC §4). The lookup and the claim use this one
rule. A run created in the future (clock skew) is not expired.

`claim_or_get` makes one run per (tenant, key) even under concurrency: it INSERTs with
ON CONFLICT DO NOTHING on the unique index inside the caller's coordinator transaction,
then reads the winner — never read-then-write. An expired key is freed by an UPDATE that
matches only while the expired run still holds it, so of concurrent claims (PostgreSQL runs
them at once) one frees it and takes it, and the others claim again and find its run
(docs/concurrency.md). The claim then:
- returns the existing run when it matches (created=False);
- raises `IdempotencyConflict` when the existing, unexpired run was claimed for another
  request: a claim that gives a request fingerprint (or an agent) must match the stored one
  exactly (a run claimed without a fingerprint matches only claims without one);
- replaces an expired claim: the old run keeps everything but its key (idempotency_key is
  set to NULL, so the index frees the key), and a new run takes the key (created=True,
  replaced_run_id = the old run). An expired key carries no promise, so any request may use it.

`IdempotencyReader(db)` only SELECTs; `IdempotencyWriter(tx)` writes inside the caller's
coordinator transaction and never commits. A claim that creates a run notes
`GuardStateChanged(tenant, SNAPSHOT)` on the transaction (one more run today), so the tenant's
cached snapshot is dropped after COMMIT. Both take the tenant first: `claim_or_get(tenant_id,
key, ...)`, `check_idempotency(tenant_id, key, ...)`.
"""
from dataclasses import asdict, dataclass
from datetime import timedelta

from . import settings
from .facts import SNAPSHOT, GuardStateChanged
from .models.base import PLACEHOLDER, PreparedInsert, PreparedQuery, new_id, utcnow
from .models.runs import Run
from .run_completion import RUN_STATUSES as FINAL_RUN_STATUSES
from .validation import (optional_text, require_database, require_int, require_tenant, require_text,
                         require_transaction)

ACCESS = "READ+WRITE"

__all__ = ["CACHEABLE_STATUSES", "DEFAULT_TTL_SECONDS", "IDEMPOTENCY_TTL_SECONDS",
           "IdempotencyClaim", "IdempotencyConflict", "IdempotencyReader", "IdempotencyResult",
           "IdempotencyWriter", "RUN_STATUSES", "check_idempotency", "claim_or_get", "get_existing_run",
           "should_return_cached", "ttl_from_environment", "validate_lookup"]

DEFAULT_TTL_SECONDS = settings.default("idempotency.ttl_seconds")
MAX_KEY_LENGTH = 255
# Statuses whose run is returned to a repeated request (exact, case-sensitive).
CACHEABLE_STATUSES = frozenset({"succeeded", "failed", "queued", "running", "retry"})
# The statuses a claimed run may start with: in flight, or any final status of a completed run.
RUN_STATUSES = ("queued", "running", "retry", *FINAL_RUN_STATUSES)
MAX_TTL_SECONDS = settings.MAX_TTL_SECONDS


def ttl_from_environment(environ=None):
    """The TTL in seconds, a positive integer: setting `idempotency.ttl_seconds`, from
    $IDEMPOTENCY_TTL_SECONDS in `environ` (default: the process environment), else the settings
    file, else 86,400."""
    return settings.get("idempotency.ttl_seconds", environ=environ)


# None: the setting, read when a TTL is needed; tests and embedders may set a number instead.
IDEMPOTENCY_TTL_SECONDS = None


class IdempotencyConflict(Exception):
    """An idempotency key reused, before it expired, for a different request."""

    def __init__(self, message, key, tenant_id, run_id):
        super().__init__(message)
        self.key = key
        self.tenant_id = tenant_id
        self.run_id = run_id


@dataclass(frozen=True)
class IdempotencyResult:
    """What a key lookup found: the run's id and status, and whether its key has expired."""

    exists: bool
    run_id: str | None = None
    status: str | None = None
    is_expired: bool = False

    def to_dict(self):
        """Plain dict."""
        return asdict(self)


@dataclass(frozen=True)
class IdempotencyClaim:
    """The run that holds a key after `claim_or_get`; `created` when this claim made it."""

    run_id: str
    status: str
    created: bool
    replaced_run_id: str | None = None

    def to_dict(self):
        """Plain dict."""
        return asdict(self)


def validate_lookup(tenant_id, key, agent_id=None):
    """Raise ValueError naming the problem when the tenant, key or agent is unusable."""
    require_tenant(tenant_id)
    require_text(key, "idempotency key")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"idempotency key is too long ({len(key)} characters; at most {MAX_KEY_LENGTH})")
    optional_text(agent_id, "agent_id")


def _is_key_expired(created_at, now, ttl_seconds):
    """True when a key created at `created_at` has reached its TTL at `now` (age >= ttl)."""
    return now >= created_at + timedelta(seconds=ttl_seconds)


def should_return_cached(result):
    """True when the key's run exists, has not expired and its status is cacheable."""
    return result.exists and not result.is_expired and result.status in CACHEABLE_STATUSES


_SELECT_BY_KEY = PreparedQuery(lambda: Run.select(
    Run.id, Run.agent_id, Run.request_fingerprint, Run.status, Run.created_at).where(
    (Run.tenant_id == PLACEHOLDER) & (Run.idempotency_key == PLACEHOLDER)))
_INSERT_CLAIM = PreparedInsert(Run, ("id", "tenant_id", "agent_id", "idempotency_key",
                                     "request_fingerprint", "status", "created_at", "updated_at"),
                               conflict_target=[Run.tenant_id, Run.idempotency_key],
                               returning=Run.id)
# Frees the key of the run that holds it still (none when another claim freed it first).
_RELEASE_KEY = PreparedQuery(lambda: Run.update({Run.idempotency_key: None, Run.updated_at: PLACEHOLDER})
                             .where((Run.id == PLACEHOLDER) & (Run.tenant_id == PLACEHOLDER)
                                    & (Run.idempotency_key == PLACEHOLDER)))


@dataclass(frozen=True)
class _KeyHolder:
    """The run currently holding a key, as read by `_SELECT_BY_KEY`."""

    run_id: str
    agent_id: str | None
    request_fingerprint: str | None
    status: str
    created_at: object


def _key_holder(db, tenant_id, key):
    row = _SELECT_BY_KEY.execute(db, (tenant_id, key)).fetchone()
    if row is None:
        return None
    run_id, agent_id, fingerprint, status, created_at = row
    return _KeyHolder(run_id, agent_id, fingerprint, status, Run.created_at.python_value(created_at))


def _ttl(ttl_seconds):
    if ttl_seconds is not None:
        return ttl_seconds
    return IDEMPOTENCY_TTL_SECONDS if IDEMPOTENCY_TTL_SECONDS is not None else ttl_from_environment()


def _check_ttl(ttl_seconds):
    """None (the module TTL) or a whole number of seconds from 1 to MAX_TTL_SECONDS."""
    if ttl_seconds is None:
        return None
    return require_int(ttl_seconds, "ttl_seconds", 1, MAX_TTL_SECONDS,
                       "{name} must be a whole number of seconds from {minimum} to {maximum} (or None), "
                       "got {value!r}")


class IdempotencyReader:
    """Looks runs up by idempotency key within one tenant; only SELECTs."""

    ACCESS = "READ"

    def __init__(self, db, clock=utcnow, ttl_seconds=None):
        self.db = require_database(db)
        self.clock = clock
        self.ttl_seconds = _check_ttl(ttl_seconds)

    def get_existing_run(self, tenant_id, key, agent_id=None):
        """The tenant's run holding `key` (and run by `agent_id`, when given), or None."""
        validate_lookup(tenant_id, key, agent_id)
        where = (Run.tenant_id == tenant_id) & (Run.idempotency_key == key)
        if agent_id is not None:
            where &= Run.agent_id == agent_id
        return Run.select().where(where).first(self.db)

    def check_idempotency(self, tenant_id, key, agent_id=None):
        """`IdempotencyResult` for the tenant's key: exists, run id, status, is_expired."""
        validate_lookup(tenant_id, key, agent_id)
        holder = _key_holder(self.db, tenant_id, key)
        if holder is None or (agent_id is not None and holder.agent_id != agent_id):
            return IdempotencyResult(exists=False)
        expired = _is_key_expired(holder.created_at, self.clock(), _ttl(self.ttl_seconds))
        return IdempotencyResult(True, holder.run_id, holder.status, expired)


class IdempotencyWriter:
    """Claims idempotency keys inside the caller's coordinator transaction; never commits."""

    ACCESS = "WRITE"

    def __init__(self, tx, clock=utcnow, ttl_seconds=None):
        self.tx = require_transaction(tx, check_open=False)
        self.clock = clock
        self.ttl_seconds = _check_ttl(ttl_seconds)

    def claim_or_get(self, tenant_id, key, agent_id=None, request_fingerprint=None,
                     status="queued", run_id=None):
        """The run holding the tenant's key, creating it (with `status`, one of RUN_STATUSES) if free.

        Raises IdempotencyConflict when an unexpired claim of the key was made for another
        fingerprint or agent; replaces an expired claim (see the module docstring).
        """
        self.tx.require_open()
        validate_lookup(tenant_id, key, agent_id)
        optional_text(request_fingerprint, "request fingerprint")
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r} "
                             f"(expected one of: {', '.join(RUN_STATUSES)})")
        optional_text(run_id, "run id")
        db, now = self.tx.db, self.clock()
        claim = {"id": run_id or new_id(), "tenant_id": tenant_id, "agent_id": agent_id,
                 "idempotency_key": key, "request_fingerprint": request_fingerprint,
                 "status": status, "created_at": now, "updated_at": now}
        while True:  # a pass that does not return follows another transaction's committed claim
            if _INSERT_CLAIM.execute(db, claim).fetchone() is not None:
                self.tx.note(GuardStateChanged(tenant_id, SNAPSHOT))  # one more run today
                return IdempotencyClaim(claim["id"], status, created=True)
            holder = _key_holder(db, tenant_id, key)
            if not _is_key_expired(holder.created_at, now, _ttl(self.ttl_seconds)):
                _check_same_request(holder, tenant_id, key, agent_id, request_fingerprint)
                return IdempotencyClaim(holder.run_id, holder.status, created=False)
            released = _RELEASE_KEY.execute(db, (Run.updated_at.db_value(now), holder.run_id, tenant_id, key))
            if released.rowcount == 1:  # the key is free now: this INSERT takes it
                _INSERT_CLAIM.execute(db, claim)
                self.tx.note(GuardStateChanged(tenant_id, SNAPSHOT))
                return IdempotencyClaim(claim["id"], status, created=True, replaced_run_id=holder.run_id)


def _check_same_request(holder, tenant_id, key, agent_id, request_fingerprint):
    """Raise IdempotencyConflict unless the claim matches the run holding the key."""
    if request_fingerprint is not None and request_fingerprint != holder.request_fingerprint:
        raise IdempotencyConflict(
            f"idempotency key {key!r} of tenant {tenant_id!r} was already used for a "
            f"different request (run {holder.run_id}; request fingerprints differ)",
            key, tenant_id, holder.run_id)
    if agent_id is not None and agent_id != holder.agent_id:
        raise IdempotencyConflict(
            f"idempotency key {key!r} of tenant {tenant_id!r} belongs to run "
            f"{holder.run_id} of agent {holder.agent_id!r}, not agent {agent_id!r}",
            key, tenant_id, holder.run_id)


def get_existing_run(db, tenant_id, key, agent_id=None):
    """The tenant's run holding `key` (narrowed to `agent_id` when given), or None."""
    return IdempotencyReader(db).get_existing_run(tenant_id, key, agent_id)


def check_idempotency(db, tenant_id, key, agent_id=None, *, clock=utcnow, ttl_seconds=None):
    """`IdempotencyResult{exists, run_id, status, is_expired}` for the tenant's key."""
    return IdempotencyReader(db, clock, ttl_seconds).check_idempotency(tenant_id, key, agent_id)


def claim_or_get(tx, tenant_id, key, agent_id=None, request_fingerprint=None, *, status="queued",
                 run_id=None, clock=utcnow, ttl_seconds=None):
    """Atomically claim the tenant's key for a new run, or get the run already holding it."""
    return IdempotencyWriter(tx, clock, ttl_seconds).claim_or_get(
        tenant_id, key, agent_id, request_fingerprint, status, run_id)
