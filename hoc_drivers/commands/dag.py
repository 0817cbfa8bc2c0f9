"""CLI: check, plan and run PLang v2.0 policy files (SPEC §12).

`dag check FILE...` prints every error (and warning) as `FILE:LINE:COL: message [CODE]` on
stderr and exits 1 when a file does not compile (or its routes form a cycle; with --strict,
when it has a warning); `dag plan` and `dag run` fail on the first error with a one-line error. `dag run` reports the context paths the policies read but did not find;
`--strict` refuses such a run (exit 2) and `--fail-on deny|escalate` exits 3 when the final
action is that or more restrictive; otherwise it exits 0 whatever the policies decide.
"""
import sys

import click

from .common import (EXIT_BLOCKED, EXIT_FAILED, MAX_JSON_TEXT_BYTES, CliError, emit, fail,
                     get_coordinator, json_option, parse_json_argument, render)

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


def _check_line(problem, strict):
    """`FILE:LINE:COL: message [CODE]`, with `warning: ` before the message of a warning that
    --strict does not make an error."""
    label = "warning: " if problem.severity == "warning" and not strict else ""
    return f"{problem.file}:{problem.line}:{problem.column}: {label}{problem.message} [{problem.code}]"


def _check_json(report, strict):
    """One file's result: ok and the counts, or the first error; `diagnostics` when any."""
    problems = [{**problem.to_dict(), "severity": "error" if strict else problem.severity}
                for problem in report.errors + report.warnings]
    failed = report.errors or (strict and report.warnings)
    if failed:
        first = (report.errors or report.warnings)[0]
        return {"ok": False, "file": report.file, "error": str(first), "diagnostics": problems}
    result = {"ok": True, "file": report.file, "nodes": report.plan.total_policies,
              "stages": len(report.plan.stages), "files": len(report.module.files)}
    return {**result, "diagnostics": problems} if problems else result


@dag.command()
@click.argument("files", nargs=-1, required=True, type=_POLICY_FILE)
@click.option("--strict", is_flag=True,
              help="Report warnings as errors (exit 1): unused imports, rules that never fire, "
                   "nested rules with the same priority, a route to a misspelt policy.")
@json_option
def check(files, strict, as_json):
    """Compile and plan each FILE with its imports; report every error as FILE:LINE:COL.

    Each error and warning is a line `FILE:LINE:COL: message [CODE]` on stderr (a warning
    says `warning:`; codes are listed in docs/plang.md); a file without errors gets
    `FILE: ok (...)` on stdout. Exit 0 when every file is clean, 1 when one has an error
    (with --strict: or a warning). With --json: per FILE {"ok", "file", "error" (the first)
    or the counts of nodes, stages and files, "diagnostics" when there are any: [{"file",
    "line", "column", "code", "severity", "message"}]}; a list of those for several FILES.

    Example: hoc-drivers dag check --strict fixtures/policies/*.plang
    """
    from ..policy.checker import check_file

    reports = [check_file(path) for path in files]
    outputs = [_check_json(report, strict) for report in reports]
    if as_json:
        emit(outputs[0] if len(outputs) == 1 else outputs, True)
    else:
        printed = set()
        for report, output in zip(reports, outputs, strict=True):
            for line in (_check_line(problem, strict)
                         for problem in report.errors + report.warnings):
                if line not in printed:     # an imported file's problem, once
                    printed.add(line)
                    click.echo(line, err=True)
            if output["ok"]:
                warned = f"; {len(report.warnings)} warnings" if report.warnings else ""
                click.echo(f"{report.file}: ok ({output['nodes']} nodes in {output['stages']} "
                           f"stages, {output['files']} files{warned})")
    if not all(output["ok"] for output in outputs):
        raise click.exceptions.Exit(EXIT_FAILED)


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
    """The --context object: inline JSON, @PATH to a file, or `-` for standard input."""
    if text == "-":
        text = sys.stdin.read(MAX_JSON_TEXT_BYTES + 1)
        if text.startswith("@"):    # read from stdin, it is JSON, never a path to follow
            raise CliError("--context: malformed JSON on standard input")
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
@click.option("--context", "context_text", required=True, metavar="JSON_OR_@PATH_OR_-",
              help="The context as a JSON object, @file.json, or - to read it from stdin.")
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

    The context is inline JSON, @PATH to a JSON file, or `-`: the JSON read from stdin.

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


def _formatted_or_fail(path):
    """The source of `path` and its canonical layout; a syntax error stops with exit 1."""
    from ..policy import PolicyError
    from ..policy.formatter import format_source

    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    try:
        return source, format_source(source, path)
    except PolicyError as error:
        fail(str(error))


@dag.command()
@click.argument("files", nargs=-1, required=True, type=_POLICY_FILE)
@click.option("--write", is_flag=True, help="Rewrite each file that is not formatted.")
@click.option("--check", is_flag=True,
              help="Print nothing but the files that would change; exit 1 if any would.")
@click.option("--diff", is_flag=True, help="Show a unified diff of each change.")
@json_option
def fmt(files, write, check, diff, as_json):
    """Print FILES in the canonical layout (rule order and comments kept; idempotent).

    --write rewrites the files that change, --diff prints a unified diff of each change
    instead of the source, --check exits 1 when a file would change (with --diff, showing
    how); --check and --write print the names of the files that change. A file that does
    not parse stops the command with FILE:LINE:COL: message (exit 1). With --json, instead
    of the source, diff or names: {"files": [{"file", "changed"}, ...], "changed": N}.

    Example: hoc-drivers dag fmt --check --diff fixtures/policies/*.plang
    """
    import difflib

    if write and check:
        raise CliError("--write and --check exclude each other")
    changed = []
    for path in files:
        source, formatted = _formatted_or_fail(path)
        if formatted != source:
            changed.append(path)
            if write:
                with open(path, "w", encoding="utf-8") as handle:
                    handle.write(formatted)
        if as_json:
            continue
        if diff:
            click.echo("".join(difflib.unified_diff(
                source.splitlines(keepends=True), formatted.splitlines(keepends=True),
                f"{path} (original)", f"{path} (formatted)")), nl=False)
        elif check or write:
            if formatted != source:
                click.echo(f"{'reformatted' if write else 'would reformat'} {path}")
        else:
            click.echo(formatted, nl=False)
    if as_json:
        emit({"files": [{"file": path, "changed": path in changed} for path in files],
              "changed": len(changed)}, True)
    if check and changed:
        raise click.exceptions.Exit(EXIT_FAILED)


def _coverage_text(coverage):
    """Per policy file: how many of its `when`s and bare actions fired, and the lines that never did."""
    lines = []
    for file, points in coverage.items():
        never = [f"{point['line']} ({point['node']})" for point in points if not point["fired"]]
        fired = len(points) - len(never)
        line = f"{file}: {fired} of {len(points)} fired"
        lines.append(line + (f"; never fired: line {', '.join(never)}" if never else ""))
    total = sum(len(points) for points in coverage.values())
    fired = sum(point["fired"] for points in coverage.values() for point in points)
    lines.append(f"coverage: {fired} of {total} rules fired ({100 * fired // max(total, 1)}%)")
    return "\n".join(lines)


@dag.command("test")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--coverage", "show_coverage", is_flag=True,
              help="Report which rules fired and which never did, per file and line.")
@json_option
def test_command(paths, show_coverage, as_json):
    """Run the policy tests in PATHS (`*_test.json` files, or folders searched for them).

    A test file `NAME_test.json` beside `NAME.plang` lists cases: a name, a context, the
    expected final action and optionally the deciding policy or rule (`decided_by`) and the
    route `target` (format: hoc_drivers/policy/policy_tests.py). Prints PASSED or FAILED per
    case, a one-line difference for each failure, and exits 1 when any case fails (or a policy
    does not compile); a malformed test file is bad input (exit 2). --coverage lists, per
    policy file, the lines of the `when`s and bare actions no case fired. With --json:
    {"ok", "passed", "failed", "cases": [...], "coverage" (with --coverage)}.

    Example: hoc-drivers dag test fixtures/policies --coverage
    """
    from ..policy import PolicyError
    from ..policy.policy_tests import PolicyTestFileError, find_test_files, run_test_files

    files = find_test_files(paths)
    if not files:
        raise CliError(f"no *_test.json files in {', '.join(paths)}")
    try:
        results, coverage = run_test_files(files)
    except PolicyTestFileError as error:
        raise CliError(str(error)) from None
    except PolicyError as error:
        fail(str(error))
    failed = [result for result in results if not result.passed]
    if as_json:
        output = {"ok": not failed, "passed": len(results) - len(failed), "failed": len(failed),
                  "cases": [result.to_dict() for result in results]}
        emit({**output, "coverage": coverage} if show_coverage else output, True)
    else:
        for result in results:
            click.echo(f"{result.file}::{result.name} {'PASSED' if result.passed else 'FAILED'}")
        for result in failed:
            click.echo(f"FAILED {result.file}::{result.name}: {result.failure}")
        if show_coverage:
            click.echo(_coverage_text(coverage))
        click.echo(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    if failed:
        raise click.exceptions.Exit(EXIT_FAILED)
