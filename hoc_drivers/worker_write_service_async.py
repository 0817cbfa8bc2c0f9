"""Worker Write Service: worker runs and cost records (reader, sync writer, awaitable facade).

`WorkerRunReader(db)` only SELECTs. `WorkerWriteService(tx)` writes inside the coordinator
transaction it is given and never commits; a cost record notes `GuardStateChanged(tenant,
SNAPSHOT)` (today's spend changed). Every method takes the tenant first:
`upsert_worker_run(tenant_id, run_id, data)`. `WorkerWriteServiceAsync(coordinator)` offers the
same methods as coroutines: each call runs the sync service inside a coordinator transaction —
the caller's, when one is open in the calling thread (joined through a savepoint), otherwise
its own, opened in a worker thread so the event loop is not blocked. The worker thread has its
own SQLite connection, so the facade needs a database file (`:memory:` is private to one
connection).

A worker run that is completed, failed or crashed is immutable in its result columns:
changing one raises `WorkerRunImmutable` (and the `worker_runs_immutable_guard` trigger
refuses it at the database too); an upsert that changes nothing is a no-op.

Run times, as the server edition (SPEC §11, reference §2.4): `started_at` is stamped when a run
is created running or first updated to running; `completed_at` only when an update moves a
run that is not yet terminal to completed or failed. A run created already terminal, and a
run that crashed, have no `completed_at`. Re-sending a terminal status stamps nothing, so it
stays the no-op above (the server edition re-stamps and trips its own trigger).
"""
import asyncio

from .dialect import for_update
from .facts import SNAPSHOT, GuardStateChanged
from .models.base import PreparedInsert, new_id, utcnow
from .models.cost import (IMMUTABLE_WORKER_RUN_COLUMNS, TERMINAL_WORKER_RUN_STATUSES,
                          WORKER_RUN_STATUSES, CostAnomaly, CostRecord, WorkerRun)
from .validation import require_database, require_int, require_tenant, require_text, require_transaction

ACCESS = "READ+WRITE"

WORKER_ID = "business-builder"
WORKFLOW_ID = "business-builder"
SKILL_ID = "llm_invoke"
COMPLETING_STATUSES = ("completed", "failed")  # an update into one of these stamps completed_at


class WorkerRunImmutable(ValueError):
    """A terminal worker run's result columns may not change."""


def _optional_count(value, name):
    return None if value is None else require_int(value, name)


def _require_amount(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"{name} must be a non-negative number, got {value!r}")
    return value


# The columns `_result_fields` may set; a new run gets the model's default (status "queued",
# recoveries and policy_violations 0, NULL otherwise) in those the caller did not send.
_RESULT_COLUMNS = ("status", "success", "error", "output_json", "replay_token_json", "total_tokens",
                   "total_latency_ms", "policy_violations", "recoveries", "cost_cents")
_INSERT_RUN = PreparedInsert(WorkerRun, ("id", "tenant_id", "worker_id", "task", "input_json",
                                         "created_at", "started_at", *_RESULT_COLUMNS),
                             conflict_target=[WorkerRun.id], returning=WorkerRun.id)
_INSERT_COST_RECORD = PreparedInsert(CostRecord, (
    "id", "tenant_id", "request_id", "workflow_id", "skill_id", "model", "input_tokens",
    "output_tokens", "cost_cents", "created_at"))
_INSERT_ADVISORY = PreparedInsert(CostAnomaly, (
    "id", "tenant_id", "anomaly_type", "severity", "entity_type", "entity_id",
    "current_value_cents", "expected_value_cents", "deviation_pct", "threshold_pct", "message",
    "metadata_json", "detected_at"))


def _result_fields(data):
    """The columns an upsert sets from the keys present in `data` (absent keys: untouched)."""
    fields = {}
    for key in ("status", "success", "error"):
        if key in data:
            fields[key] = data[key]
    if "artifacts" in data:
        fields["output_json"] = data["artifacts"] or None
    if "replay_token" in data:
        fields["replay_token_json"] = data["replay_token"] or None
    if "total_tokens_used" in data:
        fields["total_tokens"] = _optional_count(data["total_tokens_used"], "total_tokens_used")
    if "total_latency_ms" in data:
        fields["total_latency_ms"] = int(data["total_latency_ms"]) if data["total_latency_ms"] else None
    if "policy_violations" in data:
        fields["policy_violations"] = len(data["policy_violations"] or ())
    if "recovery_log" in data:
        fields["recoveries"] = len(data["recovery_log"] or ())
    if data.get("cost_cents") is not None:
        fields["cost_cents"] = require_int(data["cost_cents"], "cost_cents")
    return fields


class WorkerRunReader:
    """Tenant-scoped reads of worker runs; only SELECTs."""

    ACCESS = "READ"

    def __init__(self, db):
        self.db = require_database(db)

    def get_worker_run(self, tenant_id, run_id):
        """The tenant's worker run with that id, or None."""
        require_tenant(tenant_id)
        return (WorkerRun.select()
                .where((WorkerRun.id == run_id) & (WorkerRun.tenant_id == tenant_id))
                .first(self.db))


class WorkerWriteService:
    """Worker run, cost record and cost advisory writes inside the caller's transaction."""

    ACCESS = "WRITE"

    def __init__(self, tx):
        self.tx = require_transaction(tx, check_open=False)

    def get_worker_run(self, tenant_id, run_id):
        """The tenant's worker run with that id, or None (read in the caller's transaction)."""
        return WorkerRunReader(self.tx.db).get_worker_run(tenant_id, run_id)

    def upsert_worker_run(self, tenant_id, run_id, data):
        """Create the run, or update it from the keys present in `data`; returns the WorkerRun.

        Keys: task, status, success, error, artifacts, replay_token, total_tokens_used,
        total_latency_ms, policy_violations (list), recovery_log (list), cost_cents. On update
        only the keys sent change anything. started_at is stamped on entering "running"
        (created running included), completed_at only when an update moves the run into
        completed or failed (see the module docstring). A terminal run whose result columns would
        change raises WorkerRunImmutable; one that would not change is returned untouched.
        Concurrent upserts of one run take turns on its row (docs/concurrency.md).
        """
        self.tx.require_open()
        require_tenant(tenant_id)
        require_text(run_id, "run_id")
        if not isinstance(data, dict):
            raise ValueError(f"data must be a dict, got {type(data).__name__}")
        if "status" in data and data["status"] not in WORKER_RUN_STATUSES:
            raise ValueError(f"unknown worker run status {data['status']!r} "
                             f"(expected one of: {', '.join(WORKER_RUN_STATUSES)})")
        existing = self._locked_run(run_id)
        if existing is None:
            if self._create_run(tenant_id, run_id, data):
                return self.get_worker_run(tenant_id, run_id)
            existing = self._locked_run(run_id)  # created meanwhile by a concurrent transaction
        if existing.tenant_id != tenant_id:
            raise ValueError(f"worker run {run_id!r} does not belong to tenant {tenant_id!r}")
        return self._update_run(existing, data)

    def _locked_run(self, run_id):
        """The worker run `run_id` of any tenant, or None; locked until the transaction ends
        (`dialect.for_update`), so no concurrent upsert changes it between this read and the
        update decided from it."""
        return for_update(WorkerRun.select().where(WorkerRun.id == run_id), self.tx.db).first(self.tx.db)

    def _create_run(self, tenant_id, run_id, data):
        """Insert the run unless one with its id exists (ON CONFLICT DO NOTHING: a concurrent
        creator wins without an error); True when this call inserted it."""
        now = utcnow()
        task = data.get("task", "")
        fields = _result_fields(data)  # the columns left out get their defaults (_INSERT_RUN)
        status = fields.get("status", WorkerRun.status.default)
        row = {"id": run_id, "tenant_id": tenant_id, "worker_id": WORKER_ID, "task": task,
               "input_json": {"task": task}, "created_at": now,
               "started_at": now if status == "running" else None, **fields}
        return _INSERT_RUN.execute(self.tx.db, row).fetchone() is not None

    def _update_run(self, run, data):
        now = utcnow()
        fields = _result_fields(data)
        status = fields.get("status", run.status)
        if status == "running" and run.started_at is None:
            fields["started_at"] = now
        if status in COMPLETING_STATUSES and run.status not in TERMINAL_WORKER_RUN_STATUSES:
            fields["completed_at"] = now
        changes = {name: value for name, value in fields.items() if getattr(run, name) != value}
        if not changes:
            return run
        if run.status in TERMINAL_WORKER_RUN_STATUSES:
            guarded = sorted(set(changes) & set(IMMUTABLE_WORKER_RUN_COLUMNS))
            if guarded:
                raise WorkerRunImmutable(
                    f"TRUTH_VIOLATION: cannot mutate {run.status} worker run {run.id!r}: "
                    f"it would change {', '.join(guarded)}")
        (WorkerRun.update({getattr(WorkerRun, name): value for name, value in changes.items()})
         .where((WorkerRun.id == run.id) & (WorkerRun.tenant_id == run.tenant_id))
         .execute(self.tx.db))
        return self.get_worker_run(run.tenant_id, run.id)

    def insert_cost_record(self, tenant_id, run_id, model, input_tokens, output_tokens,
                           cost_cents):
        """Record the cost of the run's LLM usage (request_id = run_id); returns the CostRecord."""
        self.tx.require_open()
        require_tenant(tenant_id)
        require_text(model, "model")
        row = {"id": new_id(), "tenant_id": tenant_id, "request_id": run_id,
               "workflow_id": WORKFLOW_ID, "skill_id": SKILL_ID, "model": model,
               "input_tokens": require_int(input_tokens, "input_tokens"),
               "output_tokens": require_int(output_tokens, "output_tokens"),
               "cost_cents": float(_require_amount(cost_cents, "cost_cents")),
               "created_at": utcnow()}
        _INSERT_COST_RECORD.execute(self.tx.db, row)
        self.tx.note(GuardStateChanged(tenant_id, SNAPSHOT))  # today's spend changed
        return CostRecord.select().where(CostRecord.id == row["id"]).get(self.tx.db)

    def insert_cost_advisory(self, tenant_id, run_id, daily_spend, warn_threshold,
                             budget_snapshot):
        """Record a BUDGET_WARNING anomaly: today's spend passed the budget's warning threshold.

        deviation_pct = (daily_spend - warn_threshold) / warn_threshold * 100 (0 when the
        threshold is not positive); the message quotes the snapshot's `warn_threshold_pct`.
        Returns the CostAnomaly.
        """
        self.tx.require_open()
        require_tenant(tenant_id)
        _require_amount(daily_spend, "daily_spend")
        _require_amount(warn_threshold, "warn_threshold")
        if not isinstance(budget_snapshot, dict):
            raise ValueError(f"budget_snapshot must be a dict, got {type(budget_snapshot).__name__}")
        pct = budget_snapshot.get("warn_threshold_pct", 0)
        deviation = (daily_spend - warn_threshold) / warn_threshold * 100 if warn_threshold > 0 else 0
        row = {"id": new_id(), "tenant_id": tenant_id, "anomaly_type": "BUDGET_WARNING",
               "severity": "medium", "entity_type": "tenant", "entity_id": tenant_id,
               "current_value_cents": float(daily_spend),
               "expected_value_cents": float(warn_threshold), "deviation_pct": deviation,
               "threshold_pct": float(pct),
               "message": (f"Daily spend ({daily_spend}¢) exceeds {pct}% warning threshold "
                           f"({int(warn_threshold)}¢)"),
               "metadata_json": {"run_id": run_id, "budget_snapshot": budget_snapshot},
               "detected_at": utcnow()}
        _INSERT_ADVISORY.execute(self.tx.db, row)
        return CostAnomaly.select().where(CostAnomaly.id == row["id"]).get(self.tx.db)

    def delete_worker_run(self, tenant_id, run_id):
        """Delete the tenant's worker run, terminal or not; returns True when a row was deleted."""
        self.tx.require_open()
        require_tenant(tenant_id)
        deleted = (WorkerRun.delete()
                   .where((WorkerRun.id == run_id) & (WorkerRun.tenant_id == tenant_id))
                   .execute(self.tx.db))
        return deleted > 0


class WorkerWriteServiceAsync:
    """Awaitable facade of WorkerWriteService: the same methods, each in a coordinator transaction."""

    ACCESS = "READ+WRITE"  # a service over the coordinator: it opens its own transactions

    def __init__(self, coordinator):
        self.coordinator = coordinator

    async def _offload(self, function, *args):
        """Call `function` here when this thread has an open transaction, else in a worker thread."""
        if self.coordinator.current() is not None:
            return function(*args)
        return await asyncio.to_thread(function, *args)

    def _write(self, method, *args):
        """Run one service method in this thread's open transaction, or in a new one."""
        with self.coordinator.transaction() as tx:
            return getattr(WorkerWriteService(tx), method)(*args)

    async def upsert_worker_run(self, tenant_id, run_id, data):
        """Awaitable `WorkerWriteService.upsert_worker_run`."""
        return await self._offload(self._write, "upsert_worker_run", tenant_id, run_id, data)

    async def insert_cost_record(self, tenant_id, run_id, model, input_tokens, output_tokens,
                                 cost_cents):
        """Awaitable `WorkerWriteService.insert_cost_record`."""
        return await self._offload(self._write, "insert_cost_record", tenant_id, run_id, model,
                                   input_tokens, output_tokens, cost_cents)

    async def insert_cost_advisory(self, tenant_id, run_id, daily_spend, warn_threshold,
                                   budget_snapshot):
        """Awaitable `WorkerWriteService.insert_cost_advisory`."""
        return await self._offload(self._write, "insert_cost_advisory", tenant_id, run_id,
                                   daily_spend, warn_threshold, budget_snapshot)

    async def delete_worker_run(self, tenant_id, run_id):
        """Awaitable `WorkerWriteService.delete_worker_run`."""
        return await self._offload(self._write, "delete_worker_run", tenant_id, run_id)

    async def get_worker_run(self, tenant_id, run_id):
        """Awaitable `WorkerRunReader.get_worker_run` (sees the caller's open transaction)."""
        return await self._offload(WorkerRunReader(self.coordinator.db).get_worker_run,
                                   tenant_id, run_id)
