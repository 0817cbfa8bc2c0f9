"""CLI: check, plan and run PLang v2.0 policy files (SPEC §12).

`dag check FILE` prints `FILE:LINE:COL: message` on stderr and exits 1 when the file does
not compile (or its routes form a cycle); `dag plan` and `dag run` fail the same way with a
one-line error. `dag run` reports the context paths the policies read but did not find;
`--strict` refuses such a run (exit 2) and `--fail-on deny|escalate` exits 3 when the final
action is that or more restrictive; otherwise it exits 0 whatever the policies decide.
"""
import click

from .common import (EXIT_BLOCKED, EXIT_FAILED, CliError, emit, fail, get_coordinator,
                     json_option, parse_json_argument, render)

_POLICY_FILE = click.Path(exists=True, dir_okay=False)


def _compile_and_plan(path):
    """The compiled module and its plan; raises `PolicyError`."""
    from ..dag_executor import get_execution_plan
    from ..policy import compile_file

    module = compile_file(path)
    return module, get_execution_plan(module)


def _compile_and_plan_or_fail(path):
    """The compiled module and its plan; a policy error stops the command with exit 1."""
    from ..policy import PolicyError

    try:
        return _compile_and_plan(path)
    except PolicyError as error:
        fail(str(error))


@click.group()
def dag():
    """Check, plan and run PLang v2.0 policies.

    Example: hoc-drivers dag run main.plang --context '{"user": {"role": "guest"}}'
    """


@dag.command()
@click.argument("file", type=_POLICY_FILE)
@json_option
def check(file, as_json):
    """Compile FILE and its imports and plan it; print the first error as FILE:LINE:COL: message.

    Exit 0 when it compiles, 1 when it does not. With --json: {"ok", "file", "error" or the
    counts of nodes, stages and files} on stdout (the exit codes stay the same).

    Example: hoc-drivers dag check fixtures/policies/main.plang
    """
    from ..policy import PolicyError

    try:
        module, execution_plan = _compile_and_plan(file)
    except PolicyError as error:
        if as_json:
            emit({"ok": False, "file": file, "error": str(error)}, True)
        else:
            click.echo(str(error), err=True)
        raise click.exceptions.Exit(EXIT_FAILED) from None
    counts = {"nodes": execution_plan.total_policies, "stages": len(execution_plan.stages),
              "files": len(module.files)}
    if as_json:
        emit({"ok": True, "file": file, **counts}, True)
    else:
        click.echo(f"{file}: ok ({counts['nodes']} nodes in {counts['stages']} stages, "
                   f"{counts['files']} files)")


@dag.command()
@click.argument("file", type=_POLICY_FILE)
@json_option
def plan(file, as_json):
    """Show the stages FILE runs in: per phase each node, its priority and what it waits for.

    With --json: {"stages": [[names...], ...], "total_policies": N, "parallel_stages": M}.

    Example: hoc-drivers dag plan fixtures/policies/main.plang --json
    """
    from ..policy import visualize

    module, execution_plan = _compile_and_plan_or_fail(file)
    if as_json:
        emit(execution_plan.to_dict(), True)
        return
    click.echo(visualize(module, execution_plan))
    click.echo(f"{execution_plan.total_policies} nodes in {len(execution_plan.stages)} stages "
               f"({execution_plan.parallel_stages} with more than one node)")


def _read_context(text):
    context = parse_json_argument(text, "--context")
    if not isinstance(context, dict):
        raise CliError("--context: must be a JSON object")
    return context


def _trace_text(trace):
    """The trace as text: a table of the stages, then errors, missing paths and the outcome."""
    rows = [{"stage": stage.index, "policies": ", ".join(stage.policies),
             "action": stage.action.value if stage.action else "-",
             "success": "yes" if stage.success else "no"} for stage in trace.stages]
    lines = [render(rows, False, ["stage", "policies", "action", "success"])]
    lines += [f"error in {result.name}: {result.error} (counted as deny)"
              for stage in trace.stages for result in stage.results if result.error]
    if trace.missing_context:
        lines.append(f"not in the context (read as null): {', '.join(trace.missing_context)}")
    summary = f"final action: {trace.final_action.value}"
    if trace.decided_by:
        summary += f" (by {trace.decided_by}"
        summary += f", to {trace.final_target})" if trace.final_target else ")"
    lines.append(summary)
    lines.append(f"execution id: {trace.execution_id}; {len(trace.stages)} of "
                 f"{trace.total_stages} stages run; {trace.total_steps} steps")
    return "\n".join(lines)


def _context_id(context, key):
    holder = context.get(key)
    value = holder.get("id") if isinstance(holder, dict) else None
    return None if value is None else str(value)


def _record_decision(tx, module, context, trace, tenant_id):
    """Record the outcome as a policy decision: deny is blocked, escalate rejected, else selected.

    The run is the context's `run.id` (if any), the request its `request.id`.
    """
    from ..decisions import emit_policy_decision
    from ..policy import ActionType

    action = trace.final_action
    severity = {ActionType.DENY: "error", ActionType.ESCALATE: "warning"}.get(action, "info")
    by = f" by {trace.decided_by}" if trace.decided_by else " (no policy acted: default allow)"
    errors = [f"{r.name}: {r.error}" for stage in trace.stages for r in stage.results if r.error]
    return emit_policy_decision(
        tx, tenant_id, _context_id(context, "run"), f"plang:{module.name}", evaluated=True,
        violated=action in (ActionType.DENY, ActionType.ESCALATE), severity=severity,
        reason=f"PLang {module.name}: {action.value}{by}",
        request_id=_context_id(context, "request"),
        details={"execution_id": trace.execution_id, "final_action": action.value,
                 "decided_by": trace.decided_by, "final_target": trace.final_target,
                 "stages_run": len(trace.stages), "total_stages": trace.total_stages,
                 "errors": errors, "missing_context": list(trace.missing_context)})


@dag.command()
@click.argument("file", type=_POLICY_FILE)
@click.option("--context", "context_text", required=True, metavar="JSON_OR_@PATH",
              help="The context as a JSON object, or @file.json.")
@click.option("--strict", is_flag=True,
              help="Refuse the run (exit 2) when the policies read a path the context lacks.")
@click.option("--fail-on", type=click.Choice(["deny", "escalate"]),
              help="Exit 3 when the final action is this or more restrictive "
                   "(escalate: escalate or deny).")
@click.option("--record", is_flag=True,
              help="Record the outcome as a policy decision (needs --tenant).")
@click.option("--tenant", "tenant_id", help="Tenant the recorded decision belongs to.")
@json_option
def run(file, context_text, strict, fail_on, record, tenant_id, as_json):
    """Execute FILE's policies against a context and print the trace.

    The trace names the context paths the policies read but did not find (each read as null,
    so a rule on it did not fire): `missing_context` with --json. --strict makes such a run
    an error (exit 2, nothing recorded). --fail-on deny|escalate exits 3 when the final
    action is that or more restrictive (deny > escalate > route > allow); otherwise the exit
    is 0 whatever the policies decide. With --json the trace's to_dict() (plus
    `recorded_decision` with --record). --record writes one policy decision for the tenant:
    deny -> blocked, escalate -> rejected, allow or route -> selected.

    Example: hoc-drivers dag run main.plang --context @request.json --strict --fail-on deny
    """
    from ..dag_executor import DAGExecutor
    from ..policy import ActionType

    context = _read_context(context_text)
    if tenant_id is not None and not record:
        raise CliError("--tenant is only used with --record")
    tenant_id = (tenant_id or "").strip()
    if record and not tenant_id:  # not text_option: a blank --tenant gets this message too
        raise CliError("--record needs --tenant")
    module, execution_plan = _compile_and_plan_or_fail(file)
    trace = DAGExecutor().execute(module, context, execution_plan)
    if strict and trace.missing_context:
        raise CliError(f"--strict: the context lacks {', '.join(trace.missing_context)} "
                       "(read by the policies)")
    if record:
        output = _record_and_render(module, context, trace, tenant_id, as_json)
    else:
        output = render(trace.to_dict(), True) if as_json else _trace_text(trace)
    click.echo(output)
    if fail_on and trace.final_action.precedence >= ActionType(fail_on).precedence:
        click.get_current_context().exit(EXIT_BLOCKED)


def _record_and_render(module, context, trace, tenant_id, as_json):
    """Record the decision and render the output inside its transaction (printed after COMMIT)."""
    with get_coordinator().transaction() as tx:
        decision = _record_decision(tx, module, context, trace, tenant_id)
        if as_json:
            recorded = {"decision_id": decision.decision_id,
                        "decision_outcome": decision.decision_outcome.value}
            return render({**trace.to_dict(), "recorded_decision": recorded}, True)
        return (f"{_trace_text(trace)}\nrecorded decision {decision.decision_id} "
                f"(outcome {decision.decision_outcome.value}, tenant {tenant_id})")
