"""Mutation score per module: `tox -e mutation` (or `python tests/mutation/score.py [MODULE...]`).

Runs mutmut (configured in setup.cfg [mutmut]) on each module, then prints, per module, the
mutants, how many the tests killed (a timeout counts as killed), how many are listed as
equivalent in tests/mutation/equivalent.txt, and the score: killed / (mutants - equivalent).
Survivors not in that list are printed for review. Exits 1 when a module scores under the
threshold (`--min`, default 90) or a listed equivalent mutant no longer exists or was killed (the
list is stale: mutants are numbered per function, so an edit can give a listed name to another
mutant).

By default each module meets only its own tests (MODULE_TESTS), in its own copy of the
checkout under mutants-by-module/ (mutmut takes its test selection from the setup.cfg of the
directory it runs in), `--jobs` modules at a time. That is the strict figure: the whole suite
kills every mutant these tests kill, and more. `--whole-suite` runs every test against every
mutant in the checkout itself, as mutmut does by default (hours on 2 cores).
"""
import argparse
import configparser
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EQUIVALENT = Path(__file__).with_name("equivalent.txt")
WORK = ROOT / "mutants-by-module"
KILLED = {"killed", "timeout", "caught by type check"}
MODULE_TESTS = {
    "commit_guard": ["test_db_guard", "test_guard_refusals", "test_promises_guard",
                     "test_transaction_coordinator"],
    "transaction_coordinator": ["test_transaction_coordinator", "test_coordinator_edges",
                                "test_promises_outbox", "test_db_guard", "test_guard_refusals",
                                "test_contract", "test_reliability"],
    "run_completion": ["test_transaction_coordinator", "test_coordinator_edges",
                       "test_run_completion_edges", "test_promises_outbox", "test_security",
                       "test_hot_path"],
    "idempotency": ["test_idempotency", "test_promises_idempotency", "test_concurrency"],
    "alert_driver": ["test_alert_driver", "test_alert_queue_edges", "test_alert_emitter",
                     "test_alert_sender", "test_alert_sender_promises", "test_cli_alerts_guard",
                     "test_concurrency"],
    "alert_sender": ["test_alert_sender", "test_alert_sender_promises",
                     "test_alert_sender_edges", "test_alert_sender_deadline"],
    "guard_cache": ["test_guard_cache", "test_promises_cache", "test_cache_facts_edges",
                    "test_notify"],
    "governance_signal_driver": ["test_governance_signal_driver", "test_promises_signals",
                                 "test_cache_facts_edges", "test_concurrency"],
    "decisions": ["test_decisions", "test_decisions_edges", "test_cli_decisions_ledger"],
    "policy.engine": ["test_policy_language", "test_promises_policy", "test_dag_executor",
                      "test_dag_run_context", "test_plang_tests", "test_cli_dag"],
    "policy.compiler": ["test_policy_language", "test_plang_check", "test_plang_compiler_edges",
                        "test_promises_policy", "test_dag_executor"],
}
NOT_COPIED = shutil.ignore_patterns(".git", ".tox", ".venv", "mutants", "mutants-by-module",
                                    "__pycache__", "*.egg-info", "build", "dist", ".*_cache")


def equivalent_mutants(path=EQUIVALENT):
    """{mutant name: reason} from the reviewed list (`NAME  # reason`, one per line)."""
    listed = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, _, reason = line.partition("#")
        if name.strip():
            listed[name.strip()] = reason.strip()
    return listed


def mutmut(where, *args, log=None):
    """Run mutmut in directory `where`; its standard output (to `log`, a file, when given)."""
    command = [sys.executable, "-m", "mutmut", *args]
    out = subprocess.run(command, cwd=where, check=True, text=True,
                         stdout=log or subprocess.PIPE, stderr=log and subprocess.STDOUT).stdout
    return out or ""


def module_copy(module, fresh):
    """A copy of the checkout whose setup.cfg runs only `module`'s own tests; its path."""
    target = WORK / module
    results = target / "mutants"
    kept = results.exists() and not fresh
    if kept:
        results.rename(WORK / f".{module}.mutants")
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(ROOT, target, ignore=NOT_COPIED)
    if kept:
        (WORK / f".{module}.mutants").rename(results)
    config = configparser.ConfigParser(interpolation=None)
    config.read(target / "setup.cfg", encoding="utf-8")
    config["mutmut"]["pytest_add_cli_args_test_selection"] = "\n" + "\n".join(
        f"tests/{name}.py" for name in MODULE_TESTS[module])
    with open(target / "setup.cfg", "w", encoding="utf-8") as handle:
        config.write(handle)
    return target


def statuses(where, module):
    """{mutant name: status} of `module`'s mutants (after they were run in `where`)."""
    prefix = f"hoc_drivers.{module}.x"
    found = {}
    for line in mutmut(where, "results", "--all", "true").splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name.startswith(prefix):
            found[name] = status
    return found


def score(found, equivalent):
    """(mutants, killed, equivalent, score in %, surviving names not listed as equivalent)."""
    killed = sum(status in KILLED for status in found.values())
    same = sum(name in equivalent and found[name] not in KILLED for name in found)
    survivors = sorted(n for n, s in found.items() if s not in KILLED and n not in equivalent)
    counted = len(found) - same
    return len(found), killed, same, 100.0 * killed / counted if counted else 100.0, survivors


def run_module(module, options):
    """Run `module`'s mutants (unless `--no-run`); where the results are."""
    if options.whole_suite:
        where = ROOT
        if options.fresh:
            shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    else:
        where = module_copy(module, options.fresh) if not options.no_run else WORK / module
    if not options.no_run:
        with open(WORK / f"{module}.log", "w", encoding="utf-8") as log:
            mutmut(where, "run", "--max-children", "1", f"hoc_drivers.{module}.*", log=log)
        print(f"{module}: run (log: {WORK / f'{module}.log'})", flush=True)
    return where


def main(argv=None):
    """Run and score each module; the exit status says whether every one reached `--min`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=list(MODULE_TESTS),
                        help="dotted under hoc_drivers")
    parser.add_argument("--min", type=float, default=90.0, help="lowest acceptable score (%%)")
    parser.add_argument("--no-run", action="store_true", help="score the last run only")
    parser.add_argument("--fresh", action="store_true",
                        help="forget earlier results first (mutmut keeps a survivor's verdict)")
    parser.add_argument("--whole-suite", action="store_true",
                        help="every test against every mutant, in the checkout (hours)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="modules run at once (each with one mutmut worker)")
    options = parser.parse_args(argv)
    unknown = sorted(set(options.modules) - set(MODULE_TESTS))
    if unknown:
        parser.error(f"no such module: {', '.join(unknown)} (known: {', '.join(MODULE_TESTS)})")
    WORK.mkdir(exist_ok=True)
    jobs = 1 if options.whole_suite else max(1, options.jobs)
    with ThreadPoolExecutor(jobs) as pool:
        places = list(pool.map(lambda module: run_module(module, options), options.modules))
    equivalent = equivalent_mutants()
    rows, ok, seen = [], True, {}
    for module, where in zip(options.modules, places, strict=True):
        found = statuses(where, module)
        seen.update(found)
        total, killed, same, percent, survivors = score(found, equivalent)
        ok &= percent >= options.min
        rows.append(f"| {module} | {total} | {killed} | {same} | {percent:.1f}% |")
        for name in survivors:
            print(f"survived: {name}  (cd {where} && mutmut show {name})")
    tests = "the whole suite" if options.whole_suite else "each module's own tests"
    print(f"\nKilled by {tests}:\n| module | mutants | killed | equivalent | score |\n"
          "|---|---|---|---|---|")
    print("\n".join(rows))
    stale = sorted(name for name in equivalent if seen.get(name, "killed") in KILLED
                   and any(name.startswith(f"hoc_drivers.{m}.x") for m in options.modules))
    for name in stale:
        print(f"stale entry in {EQUIVALENT.name}: {name} "
              f"({'killed' if name in seen else 'no such mutant any more'}: review the list)")
    return 0 if ok and not stale else 1


if __name__ == "__main__":
    sys.exit(main())
