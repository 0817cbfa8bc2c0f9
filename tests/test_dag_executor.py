"""The planner and the DAG executor: stages, cycles, early DENY, most restrictive action,
fail-closed errors, governance counters, execution ids, determinism and the thread pool."""
import json
import pathlib
import textwrap

import pytest

from hoc_drivers import dag_executor
from hoc_drivers.dag_executor import DAGExecutor, get_execution_plan, visualize_plan
from hoc_drivers.policy import (ActionType, DeterministicEngine, ExecutionPlan, PolicyCompileError,
                                PolicyCycleError, compile_file, compile_source, execution_id)
from hoc_drivers.policy.generator import generate_policies, sample_context

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "fixtures" / "policies"


def module_of(source):
    return compile_source(textwrap.dedent(source))


def stages_of(source):
    return [list(stage) for stage in get_execution_plan(module_of(source)).stages]


def run(source, context=None, **options):
    return DAGExecutor(**options).execute(module_of(source), context or {})


def load_context(name):
    return json.loads((FIXTURES / "contexts" / f"{name}.json").read_text(encoding="utf-8"))


# --- planning ----------------------------------------------------------------------------

def test_stages_follow_phases_then_priority_then_source_order():
    assert stages_of("""
        policy custom_a: CUSTOM { }
        policy route_a: ROUTING { }
        policy safe_low: SAFETY { priority 5 }
        policy ops_a: OPERATIONAL { }
        policy safe_high: SAFETY { priority 500 }
        policy privacy_a: PRIVACY { }
        policy safe_z: SAFETY { }
        policy safe_a: SAFETY { }
        policy ops_b: OPERATIONAL { priority 51 }
    """) == [["safe_high", "safe_z", "safe_a", "safe_low"], ["privacy_a"],
             ["ops_b", "ops_a"], ["route_a"], ["custom_a"]]


def test_plan_counts_nodes_and_parallel_stages():
    plan = get_execution_plan(module_of("""
        policy a: SAFETY { rule n: PRIVACY { } }
        policy b: SAFETY { }
        rule c: CUSTOM { }
    """))
    assert plan.to_dict() == {"stages": [["a", "b"], ["a.n"], ["c"]], "total_policies": 4,
                              "parallel_stages": 1}
    assert plan.order() == ["a", "b", "a.n", "c"]


def test_same_phase_routes_run_the_target_first_and_split_stages():
    assert stages_of("""
        policy front: ROUTING { priority 99 route to middle }
        policy middle: ROUTING { route to back }
        policy back: ROUTING { priority 1 }
        policy other: ROUTING { priority 2 }
        policy agent_router: ROUTING { route to some_agent }
    """) == [["agent_router", "other", "back"], ["middle"], ["front"]]


def test_routes_to_earlier_phases_do_not_change_the_stages():
    assert stages_of("""
        policy guard: SAFETY { }
        policy router: ROUTING { route to guard }
        policy peer: ROUTING { priority 10 }
    """) == [["guard"], ["router", "peer"]]


def test_nodes_of_a_later_phase_wait_for_every_earlier_phase():
    # ops_late waits (route) behind ops_first; the ROUTING node must still come after both.
    assert stages_of("""
        policy router: ROUTING { }
        policy ops_late: OPERATIONAL { route to ops_first }
        policy ops_first: OPERATIONAL { }
    """) == [["ops_first"], ["ops_late"], ["router"]]


@pytest.mark.parametrize("source, cycle, line, column", [
    ("policy a: ROUTING {\n  route to b\n}\npolicy b: ROUTING { route to a }",
     ["a", "b", "a"], 2, 3),
    ("policy b: ROUTING { route to a }\npolicy a: ROUTING {\n  route to b\n}",
     ["b", "a", "b"], 1, 21),
    ("policy self: CUSTOM {\n  when x then route to self\n}", ["self", "self"], 2, 15),
    ("policy x: OPERATIONAL { route to y }\npolicy y: OPERATIONAL { route to z }\n"
     + "policy z: OPERATIONAL { when q then route to x }", ["x", "y", "z", "x"], 1, 25),
])
def test_route_cycles_raise_naming_the_nodes_in_order(source, cycle, line, column):
    module = compile_source(source)
    with pytest.raises(PolicyCycleError) as caught:
        get_execution_plan(module)
    error = caught.value
    assert list(error.cycle) == cycle
    assert error.message == "route cycle: " + " -> ".join(cycle)
    assert (error.line, error.column) == (line, column)
    assert isinstance(error, PolicyCompileError)


def test_visualize_plan_text():
    module = module_of("""
        policy p: SAFETY { deny }
        policy r1: ROUTING { route to r2 route to p }
        policy r2: ROUTING { priority 31 }
        rule c: CUSTOM { }
    """)
    assert visualize_plan(module) == (
        "Execution DAG:\n\n[SAFETY_CHECK]\n  p (p=100) <- none\n\n"
        "[ROUTING]\n  r2 (p=31) <- none\n  r1 (p=30) <- p, r2\n\n[CUSTOM]\n  c (p=10) <- none\n")
    assert visualize_plan(module_of("policy p: SAFETY { deny }")) == \
        "Execution DAG:\n\n[SAFETY_CHECK]\n  p (p=100) <- none\n"
    assert visualize_plan(module_of("")) == "Empty DAG"
    assert DAGExecutor().visualize_plan(module) == visualize_plan(module)


# --- executing ---------------------------------------------------------------------------

def test_early_deny_stops_execution_and_total_stages_is_planned():
    trace = run("""
        policy ok: SAFETY { allow }
        policy block: PRIVACY { when user.role == "guest" then deny }
        policy never: OPERATIONAL { escalate }
    """, {"user": {"role": "guest"}})
    assert trace.final_action is ActionType.DENY and trace.decided_by == "block"
    assert [stage.policies for stage in trace.stages] == [("ok",), ("block",)]
    assert trace.total_stages == 3 and trace.stages[1].was_blocked


def test_stage_action_is_the_most_restrictive_of_its_nodes():
    trace = run("""
        policy a: ROUTING { allow }
        policy b: ROUTING { route to desk }
        policy c: ROUTING { escalate }
        policy d: ROUTING { }
        policy e: ROUTING { route to other_desk }
    """)
    (stage,) = trace.stages
    assert stage.action is ActionType.ESCALATE and stage.decisive.name == "c"
    assert [r.action for r in stage.results] == [ActionType.ALLOW, ActionType.ROUTE,
                                                 ActionType.ESCALATE, None, ActionType.ROUTE]


def test_final_action_is_the_most_restrictive_stage_and_ties_keep_the_first():
    trace = run("""
        policy first: SAFETY { route to desk_one }
        policy second: OPERATIONAL { allow }
        policy third: ROUTING { route to desk_two }
        policy fourth: CUSTOM { allow }
    """)
    assert trace.final_action is ActionType.ROUTE
    assert (trace.decided_by, trace.final_target) == ("first", "desk_one")
    escalated = run("policy e: SAFETY { escalate }\npolicy later: CUSTOM { allow }")
    assert escalated.final_action is ActionType.ESCALATE and len(escalated.stages) == 2


def test_default_allow_when_no_node_acts_or_there_are_none():
    trace = run("policy quiet: SAFETY { when false then deny }")
    assert trace.final_action is ActionType.ALLOW and trace.decided_by is None
    assert trace.stages[0].action is None
    empty = run("")
    assert empty.final_action is ActionType.ALLOW and empty.stages == () and empty.total_stages == 0


def test_an_erroring_node_fails_closed_in_the_trace():
    source = """
        policy loop_a: PRIVACY { rule loop_b }
        policy loop_b: PRIVACY { priority 1 }
        policy fine: PRIVACY { priority 2 allow }
        policy later: CUSTOM { allow }
    """
    module = module_of(source.replace("priority 1 }", "priority 1 rule loop_a }"))
    trace = DAGExecutor().execute(module, {})
    (stage,) = trace.stages
    assert trace.final_action is ActionType.DENY and not stage.success
    errors = {r.name: r.error for r in stage.results}
    assert errors == {"loop_a": "rule reference cycle: loop_a -> loop_b -> loop_a",
                      "fine": None, "loop_b": "rule reference cycle: loop_b -> loop_a -> loop_b"}
    assert trace.privacy_passed == 1
    stage_dict = trace.to_dict()["stages"][0]
    assert stage_dict["success"] is False and stage_dict["action"] == "deny"
    assert stage_dict["results"][0]["error"].startswith("rule reference cycle")


def test_step_limit_in_the_executor_fails_closed():
    source = ("policy heavy: SAFETY { when a and a and a and a then allow }\n"
              "policy light: SAFETY { allow }")
    trace = DAGExecutor(DeterministicEngine(max_steps=4)).execute(module_of(source), {"a": 1})
    heavy = trace.stages[0].results[0]
    assert heavy.error == "step limit exceeded (4 steps)" and heavy.action is ActionType.DENY
    assert trace.final_action is ActionType.DENY and trace.safety_passed == 1


def test_governance_counters_count_successful_nodes_of_three_categories():
    trace = run("""
        policy s1: SAFETY { }
        policy s2: SAFETY { when false then deny }
        policy p1: PRIVACY { allow }
        policy o1: OPERATIONAL { escalate }
        policy o2: OPERATIONAL { }
        policy r1: ROUTING { }
        policy c1: CUSTOM { deny }
    """)
    assert (trace.safety_passed, trace.privacy_passed, trace.operational_passed) == (2, 1, 2)
    assert trace.to_dict()["governance_summary"] == {"safety_passed": 2, "privacy_passed": 1,
                                                     "operational_passed": 2}
    assert trace.final_action is ActionType.DENY and trace.decided_by == "c1"


def test_total_steps_add_each_stages_longest_node_and_intents_count_decided_actions():
    trace = run("""
        policy long: SAFETY { when a and a and a then allow }
        policy short: SAFETY { escalate }
        policy quiet: SAFETY { when false then deny }
        policy ops: OPERATIONAL { route to desk }
        policy broken: CUSTOM { rule broken }
    """, {"a": 1})
    first, second, third = trace.stages
    longest = max(r.steps for r in first.results)
    assert longest > min(r.steps for r in first.results)
    assert (first.steps, second.steps, third.steps) == (longest, second.results[0].steps,
                                                        third.results[0].steps)
    assert trace.total_steps == first.steps + second.steps + third.steps    # as the server edition
    assert trace.total_steps < sum(r.steps for s in trace.stages for r in s.results)
    # long (allow), short (escalate), ops (route); not quiet (no action) nor broken (an error)
    assert (first.intents_count, second.intents_count, third.intents_count) == (2, 1, 0)
    data = trace.to_dict()
    assert (data["total_steps"], data["intents_count"]) == (trace.total_steps, 3)
    assert list(data)[:8] == ["execution_id", "total_stages", "stages", "final_action",
                              "final_target", "decided_by", "intents_count", "total_steps"]
    assert run("").to_dict()["intents_count"] == 0


def test_to_dict_shape():
    trace = run('policy p: SAFETY { when user.role == "x" then deny }\n'
                "policy r: ROUTING { route to a1 }",
                {"request": {"id": "req_123"}, "user": {"id": "user_456"},
                 "agent": {"id": "agent_789"}})
    data = trace.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["execution_id"] == "exec_c75c08e4dac457cd"
    assert (data["final_action"], data["final_target"], data["decided_by"]) == ("route", "a1", "r")
    assert data["total_stages"] == 2 and data["total_steps"] == sum(
        r["steps"] for s in data["stages"] for r in s["results"])
    assert data["stages"][0] == {
        "index": 0, "policies": ["p"], "success": True, "action": None,
        "results": [{"name": "p", "category": "SAFETY", "action": None, "target": None,
                     "steps": 5, "error": None}]}
    assert data["stages"][1]["results"][0]["target"] == "a1"


def test_the_trace_lists_the_context_paths_read_but_not_found():
    source = """
        policy p: SAFETY {
          when is_empty(request) and false then deny
          when request.text == "x" or user.role.inner == 1 or user.name == 1 then deny
          when lower(agent).tier == "x" or false and budget.spent then deny
          when is_empty(user.tags) and user.missing then deny
        }
        policy later: CUSTOM { when flags.beta then allow }
    """
    context = {"user": {"role": "analyst", "name": None, "tags": []}}
    trace = run(source, context)
    assert trace.stages[0].results[0].missing == (
        "request", "request.text", "user.role.inner", "agent", "user.missing")
    assert trace.missing_context == ("agent", "flags.beta", "request.text", "user.missing",
                                     "user.role.inner")
    assert trace.to_dict()["missing_context"] == list(trace.missing_context)
    assert run(source, {"request": {"text": "y"}, "flags": {"beta": False}, "agent": {},
                        "user": {"role": {"inner": 0}, "name": 1, "tags": [1]}}).missing_context == ()


def test_missing_paths_come_from_executed_nodes_only_and_survive_errors():
    trace = run("policy stop: SAFETY { when gate.open then allow deny }\n"
                "policy broken: SAFETY { when user.id == 1 then allow rule broken }\n"
                "policy never: CUSTOM { when unseen.field then deny }")
    assert trace.final_action is ActionType.DENY and len(trace.stages) == 1
    assert trace.missing_context == ("gate.open", "user.id")


def test_fixture_policies_on_an_empty_context_allow_but_say_what_was_missing():
    module = compile_file(str(FIXTURES / "main.plang"))
    trace = DAGExecutor().execute(module, {})
    assert trace.final_action is ActionType.ALLOW
    assert {"request.text", "user.role", "agent.verified", "budget.spent_cents"} <= set(
        trace.missing_context)
    assert DAGExecutor(max_workers=3).execute(module, {}) == trace


@pytest.mark.parametrize("context, expected", [
    ({}, "exec_3ae64fcb56c76d37"),
    ({"request": {"id": "req_123"}, "user": {"id": "user_456"}, "agent": {"id": "agent_789"}},
     "exec_c75c08e4dac457cd"),
    ({"request": {"id": "test_req"}}, "exec_52e9db5e3bd36f78"),
    ({"request": {"id": "r1"}, "user": "not an object"}, "exec_149977c6b31b04ab"),
    ({"request": {"id": "full_test"}, "user": {"id": "user_123"}}, "exec_8daec1051ec3525e"),
])
def test_execution_id_is_derived_from_the_context(context, expected):
    assert execution_id(context) == expected
    assert DAGExecutor().execute(module_of(""), context).execution_id == expected


def test_explicit_plan_and_unknown_names_fail_closed():
    module = module_of("policy a: SAFETY { allow }\npolicy b: CUSTOM { deny }")
    trace = DAGExecutor().execute(module, {}, ExecutionPlan((("a",),), 2, 0))
    assert trace.final_action is ActionType.ALLOW and len(trace.stages) == 1
    bogus = DAGExecutor().execute(module, {}, ExecutionPlan((("a", "ghost"),), 2, 1))
    ghost = bogus.stages[0].results[1]
    assert ghost.error == "unknown policy 'ghost'" and bogus.final_action is ActionType.DENY
    assert ghost.to_dict()["category"] is None
    with pytest.raises(TypeError, match="ExecutionPlan"):
        DAGExecutor().execute(module, {}, [["a"]])


def test_context_must_be_an_object_and_is_not_modified():
    module = module_of("policy p: SAFETY { allow }")
    with pytest.raises(TypeError, match="JSON object"):
        DAGExecutor().execute(module, ["not", "an", "object"])
    context = {"user": {"tags": ["a"]}}
    DAGExecutor().execute(module, context)
    assert context == {"user": {"tags": ["a"]}}


# --- the fixture policy set ---------------------------------------------------------------

@pytest.fixture(scope="module")
def fixture_module():
    return compile_file(str(FIXTURES / "main.plang"))


@pytest.mark.parametrize("context_name, action, decided_by, target, stages_run", [
    ("benign", "route", "expert_routing", "finance_agent", 6),
    ("prompt_injection", "deny", "prompt_injection_guard", None, 1),
    ("pii", "deny", "pii_guard", None, 2),
    ("over_budget", "deny", "budget_guard", None, 3),
    ("legal", "escalate", "legal_review", None, 6),
])
def test_fixture_scenarios(fixture_module, context_name, action, decided_by, target, stages_run):
    trace = DAGExecutor().execute(fixture_module, load_context(context_name))
    assert trace.final_action.value == action
    assert (trace.decided_by, trace.final_target) == (decided_by, target)
    assert len(trace.stages) == stages_run and trace.total_stages == 6
    assert all(stage.success for stage in trace.stages)


def test_fixture_plan_uses_imports_nested_rules_and_routes(fixture_module):
    plan = get_execution_plan(fixture_module)
    assert plan.total_policies == 15 and len(plan.stages) == 6 and plan.parallel_stages == 4
    assert plan.stages[0][0] == "kill_switch" and "pii_guard.email_address" in plan.stages[1]
    assert plan.stages[3:5] == (("legal_review", "enterprise_customers"), ("expert_routing",))
    assert DAGExecutor().get_execution_plan(fixture_module) == plan


# --- determinism and the thread pool ------------------------------------------------------

def test_same_module_and_context_give_the_same_trace_100_times(fixture_module):
    context = load_context("legal")
    first = DAGExecutor().execute(fixture_module, context).to_dict()
    runs = [DAGExecutor().execute(fixture_module, context).to_dict() for _ in range(100)]
    assert all(run_dict == first for run_dict in runs)


@pytest.mark.parametrize("context_name", ["benign", "pii", "legal", "prompt_injection"])
def test_thread_pool_gives_the_same_trace_as_sequential(fixture_module, context_name):
    context = load_context(context_name)
    sequential = DAGExecutor().execute(fixture_module, context)
    pooled = DAGExecutor(max_workers=4).execute(fixture_module, context)
    assert pooled == sequential and pooled.to_dict() == sequential.to_dict()


def test_thread_pool_on_generated_policies_with_errors_and_denies():
    module = compile_source(generate_policies(200) + "policy bad: SAFETY { rule bad }\n")
    context = sample_context()
    for user_role in ("analyst", "guest"):
        context["user"]["role"] = user_role
        plan = get_execution_plan(module)
        sequential = DAGExecutor().execute(module, context, plan)
        pooled = DAGExecutor(max_workers=3).execute(module, context, plan)
        assert pooled.to_dict() == sequential.to_dict()
        assert sequential.final_action is ActionType.DENY


def test_generated_policies_compile_plan_and_allow_the_sample_context():
    module = compile_source(generate_policies(100))
    plan = get_execution_plan(module)
    assert plan.total_policies == len(module.nodes) > 100
    trace = DAGExecutor().execute(module, sample_context(), plan)
    assert trace.final_action is ActionType.ALLOW and len(trace.stages) == len(plan.stages)
    assert generate_policies(100) == generate_policies(100) != generate_policies(100, seed=1)


def test_executor_module_declares_read_access_first():
    source = pathlib.Path(dag_executor.__file__).read_text(encoding="utf-8").splitlines()
    assert source[0] == '"""DAG-based executor for PLang v2.0.'
    assert dag_executor.ACCESS == "READ"
