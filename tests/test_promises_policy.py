"""Fail-closed policies (README "Guarantees": policies cannot pass silently; docs/plang.md
"Node errors fail closed"), each test named after the promise it pins."""
import hashlib

import pytest

from hoc_drivers.dag_executor import DAGExecutor
from hoc_drivers.policy import ActionType, DeterministicEngine, compile_source
from hoc_drivers.policy.engine import execution_id

GUEST_DENIED = compile_source('policy p: SAFETY { when user.role == "guest" then deny allow }')
BAD_PATTERN = "(a)\\1"  # RE2 refuses it: evaluating matches() with it is a node error


@pytest.mark.parametrize("context", [None, 5, 2.5, True, "user", ["user"]])
def test_a_context_that_is_not_an_object_fails_the_node_closed(context):
    result = DeterministicEngine().evaluate(GUEST_DENIED, "p", context)
    assert result.action is ActionType.DENY and not result.success
    assert result.error == f"context must be a JSON object, got {type(context).__name__}"


def test_an_unexpected_error_fails_the_node_closed_and_is_named_by_its_type():
    class Exploding(dict):
        def __contains__(self, key):
            raise RuntimeError("the context broke")

    result = DeterministicEngine().evaluate(GUEST_DENIED, "p", Exploding())
    assert (result.action, result.error) == (ActionType.DENY, "RuntimeError: the context broke")


@pytest.mark.parametrize("context", [[], "", "x", ()])
def test_an_empty_or_keyless_non_object_context_fails_the_node_closed(context):
    result = DeterministicEngine().evaluate(GUEST_DENIED, "p", context)
    assert result.action is ActionType.DENY and not result.success


@pytest.mark.parametrize("context", [None, [], "x", 5])
def test_the_executor_refuses_a_context_that_is_not_an_object(context):
    with pytest.raises(TypeError, match="the context must be a JSON object"):
        DAGExecutor().execute(GUEST_DENIED, context)


def test_and_short_circuits_so_an_erroring_operand_after_a_false_one_is_never_evaluated():
    module = compile_source("policy p: SAFETY { when request.go and matches(request.text, "
                            "request.pattern) then escalate allow }")
    context = {"request": {"go": False, "text": "aa", "pattern": BAD_PATTERN}}
    result = DeterministicEngine().evaluate(module, "p", context)
    assert (result.action, result.error) == (ActionType.ALLOW, None)
    context["request"]["go"] = True  # now the pattern is evaluated: the node fails closed
    result = DeterministicEngine().evaluate(module, "p", context)
    assert result.action is ActionType.DENY and "RE2 cannot compile" in result.error


def test_or_short_circuits_so_an_erroring_operand_after_a_true_one_is_never_evaluated():
    module = compile_source("policy p: SAFETY { when request.stop or matches(request.text, "
                            "request.pattern) then escalate allow }")
    context = {"request": {"stop": True, "text": "aa", "pattern": BAD_PATTERN}}
    result = DeterministicEngine().evaluate(module, "p", context)
    assert (result.action, result.error) == (ActionType.ESCALATE, None)


def test_a_short_circuited_operand_reports_no_missing_paths():
    module = compile_source("policy p: SAFETY { when a and b.c then deny allow }")
    assert DeterministicEngine().evaluate(module, "p", {"a": False}).missing == ()
    assert DeterministicEngine().evaluate(module, "p", {"a": True}).missing == ("b", "b.c")


def test_a_node_that_decides_nothing_has_no_source_and_its_dict_says_so():
    module = compile_source("policy p: SAFETY { when false then deny }")
    result = DeterministicEngine().evaluate(module, "p", {})
    assert (result.action, result.source) == (None, None)
    assert result.to_dict() == {"name": "p", "category": "SAFETY", "action": None, "target": None,
                                "steps": 2, "error": None}


def test_a_decision_shows_its_action_in_lower_case_in_its_dict():
    result = DeterministicEngine().evaluate(GUEST_DENIED, "p", {"user": {"role": "guest"}})
    assert result.to_dict()["action"] == "deny" and result.source is not None


@pytest.mark.parametrize("context", [None, ["request"], "request", 5])
def test_the_execution_id_of_a_context_that_is_not_an_object_is_that_of_no_ids(context):
    assert execution_id(context) == execution_id({}) == \
        "exec_" + hashlib.sha256(b"None:None:None").hexdigest()[:16]


def test_a_one_step_budget_is_allowed_and_a_zero_one_refused_by_name():
    module = compile_source("policy p: SAFETY { allow }")
    assert DeterministicEngine(max_steps=1).evaluate(module, "p", {}).action is ActionType.ALLOW
    with pytest.raises(ValueError, match="^max_steps must be at least 1$"):
        DeterministicEngine(max_steps=0)


def test_a_node_that_fails_closed_keeps_its_category():
    result = DeterministicEngine().evaluate(GUEST_DENIED, "p", None)
    assert (result.action, result.category.value) == (ActionType.DENY, "SAFETY")
    assert result.to_dict()["category"] == "SAFETY"
