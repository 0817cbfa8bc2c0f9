"""Mutation score per module: `tox -e mutation` (or `python tests/mutation/score.py [MODULE...]`).

Runs mutmut (configured in setup.cfg [mutmut]; it copies the code and tests into ./mutants/)
on each module in turn with one worker, then prints, per module, the mutants, how many the
suite killed (a timeout counts as killed), how many are listed as equivalent in
tests/mutation/equivalent.txt, and the score: killed / (mutants - equivalent). Survivors not
in that list are printed for review. Exits 1 when a module scores under the threshold
(`--min`, default 90) or a listed equivalent mutant no longer exists (the list is stale).
"""
import argparse
import shutil
import subprocess
import sys
from pathlib import Path

MODULES = ["governance_signal_driver", "guard_cache", "idempotency", "policy.engine",
           "transaction_coordinator", "run_completion", "commit_guard", "alert_driver",
           "alert_sender", "decisions", "policy.compiler"]
EQUIVALENT = Path(__file__).with_name("equivalent.txt")
KILLED = {"killed", "timeout", "caught by type check"}


def equivalent_mutants(path=EQUIVALENT):
    """{mutant name: reason} from the reviewed list (`NAME  # reason`, one per line)."""
    listed = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        name, _, reason = line.partition("#")
        if name.strip():
            listed[name.strip()] = reason.strip()
    return listed


def mutmut(*args, capture=False):
    """Run mutmut in the checkout; its standard output when `capture` (else it is shown)."""
    command = [sys.executable, "-m", "mutmut", *args]
    return subprocess.run(command, check=True, stdout=subprocess.PIPE if capture else None,
                          text=True).stdout


def statuses(module):
    """{mutant name: status} of `module`'s mutants (after they were run)."""
    prefix = f"hoc_drivers.{module}.x"
    found = {}
    for line in mutmut("results", "--all", "true", capture=True).splitlines():
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


def main(argv=None):
    """Run and score each module; the exit status says whether every one reached `--min`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", default=MODULES, help="dotted under hoc_drivers")
    parser.add_argument("--min", type=float, default=90.0, help="lowest acceptable score (%%)")
    parser.add_argument("--no-run", action="store_true", help="score the last run only")
    parser.add_argument("--fresh", action="store_true",
                        help="forget earlier results first (mutmut keeps a survivor's verdict)")
    options = parser.parse_args(argv)
    if options.fresh:
        shutil.rmtree("mutants", ignore_errors=True)
    equivalent = equivalent_mutants()
    rows, ok, seen = [], True, set()
    for module in options.modules:
        if not options.no_run:
            mutmut("run", "--max-children", "1", f"hoc_drivers.{module}.*")
        found = statuses(module)
        seen |= set(found)
        total, killed, same, percent, survivors = score(found, equivalent)
        ok &= percent >= options.min
        rows.append(f"| {module} | {total} | {killed} | {same} | {percent:.1f}% |")
        for name in survivors:
            print(f"survived: {name}  (mutmut show {name})")
    print("| module | mutants | killed | equivalent | score |\n|---|---|---|---|---|")
    print("\n".join(rows))
    stale = sorted(name for name in equivalent if name not in seen
                   and any(name.startswith(f"hoc_drivers.{m}.x") for m in options.modules))
    for name in stale:
        print(f"stale entry in {EQUIVALENT.name}: {name} (no such mutant any more)")
    return 0 if ok and not stale else 1


if __name__ == "__main__":
    sys.exit(main())
