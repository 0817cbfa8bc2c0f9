"""Execution planning: the stages in which a module's nodes run (SPEC §12).

Phases run in category order (SAFETY, PRIVACY, OPERATIONAL, ROUTING, CUSTOM). A `route to X`
where X is a node makes the router wait for X. Each stage is the ready nodes of the earliest
phase that has any, highest priority first, ties in source order; so a stage never mixes
phases and its nodes never depend on each other.
"""
import graphlib
from dataclasses import dataclass

from .errors import PolicyCycleError
from .nodes import Category


@dataclass(frozen=True)
class ExecutionPlan:
    """Stages of node names, the node count, and how many stages hold more than one node."""

    stages: tuple
    total_policies: int
    parallel_stages: int

    def to_dict(self):
        """`{"stages": [[names...], ...], "total_policies": N, "parallel_stages": M}`."""
        return {"stages": [list(stage) for stage in self.stages],
                "total_policies": self.total_policies, "parallel_stages": self.parallel_stages}

    def order(self):
        """All node names in execution order."""
        return [name for stage in self.stages for name in stage]


def _cycle_error(module, cycle):
    """A `PolicyCycleError` for graphlib's cycle, written in route order from its first node."""
    # graphlib lists each node before the node that depends on it, i.e. route targets first.
    routed = list(reversed(cycle[:-1]))
    start = min(range(len(routed)), key=lambda i: module.nodes[routed[i]].index)
    routed = routed[start:] + routed[:start]
    first, second = routed[0], routed[1 % len(routed)]
    edge = next(e for e in module.nodes[first].routes if e.target == second)
    names = [*routed, routed[0]]
    return PolicyCycleError("route cycle: " + " -> ".join(names), edge.location.file,
                            edge.location.line, edge.location.column, names)


def route_cycles(module):
    """Every route cycle of `module` as a `PolicyCycleError`, for `dag check`: once a cycle is
    found its nodes are set aside and the rest is searched again."""
    graph = {name: node.dependencies for name, node in module.nodes.items()}
    cycles = []
    while True:
        try:
            graphlib.TopologicalSorter(graph).prepare()
        except graphlib.CycleError as error:
            cycles.append(_cycle_error(module, error.args[1]))
            for name in error.args[1]:
                graph.pop(name, None)
        else:
            return cycles


def build_plan(module):
    """Plan `module`'s nodes into stages; raise `PolicyCycleError` on a route cycle."""
    nodes = module.nodes
    sorter = graphlib.TopologicalSorter({name: node.dependencies for name, node in nodes.items()})
    try:
        sorter.prepare()
    except graphlib.CycleError as error:
        raise _cycle_error(module, error.args[1]) from None
    ready, stages = [], []
    while sorter.is_active():
        ready.extend(sorter.get_ready())
        phase = min(nodes[name].category.rank for name in ready)
        stage = sorted((name for name in ready if nodes[name].category.rank == phase),
                       key=lambda name: (-nodes[name].priority, nodes[name].index))
        ready = [name for name in ready if nodes[name].category.rank != phase]
        sorter.done(*stage)
        stages.append(tuple(stage))
    return ExecutionPlan(tuple(stages), len(nodes), sum(1 for stage in stages if len(stage) > 1))


def visualize(module, plan=None):
    """The plan as text: `Execution DAG:`, then each phase's nodes, priorities and dependencies."""
    if not module.nodes:
        return "Empty DAG"
    order = (plan or build_plan(module)).order()
    lines = ["Execution DAG:", ""]
    for category in Category:
        names = [name for name in order if module.nodes[name].category is category]
        if not names:
            continue
        lines.append(f"[{category.phase_label}]")
        for name in names:
            node = module.nodes[name]
            dependencies = ", ".join(node.dependencies) or "none"
            lines.append(f"  {name} (p={node.priority}) <- {dependencies}")
        lines.append("")
    return "\n".join(lines)
