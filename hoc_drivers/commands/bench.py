"""CLI: benchmarks against raw sqlite3 (and other same-run baselines), printed as ratios."""
import click

from .common import CliError, emit, json_option

COLUMNS = ["name", "median_us", "baseline", "baseline_median_us", "ratio", "throughput_ratio",
           "p99_us", "baseline_p99_us", "target"]


@click.command()
@click.option("--quick", is_flag=True, help="Smaller counts (well under a minute).")
@click.option("--full", is_flag=True, help="Include the 1M-row workloads (slow: builds big tables).")
@click.option("--only", "names", multiple=True, metavar="WORKLOAD",
              help="Run only this workload (repeatable).")
@click.option("--backend", type=click.Choice(["sqlite", "postgresql"]), default="sqlite",
              show_default=True,
              help="postgresql: the PostgreSQL workloads, on a server started in a temporary "
                   "folder (needs the pg extra).")
@json_option
def bench(quick, full, names, backend, as_json):
    """Run every workload beside its baseline in the same run and print the ratios.

    Ratios (workload median / baseline median) are what to quote: absolute times depend on
    the machine. Example: hoc-drivers bench --quick; on PostgreSQL (beside raw psycopg, and
    run completions by 1 to 8 writer processes): hoc-drivers bench --backend postgresql --quick
    """
    from ..bench import WORKLOADS, run_benchmarks

    workloads, run = WORKLOADS, run_benchmarks
    if backend == "postgresql":
        from ..bench_pg import PG_WORKLOADS, run_pg_benchmarks

        workloads, run = PG_WORKLOADS, run_pg_benchmarks
    unknown = [n for n in names if n not in workloads]
    if unknown:
        raise CliError(f"unknown workload {unknown[0]!r} (known: {', '.join(workloads)})")
    selected = list(names) or list(workloads)
    with click.progressbar(length=len(selected), label="benchmarking", file=click.get_text_stream("stderr"),
                           item_show_func=lambda name: name) as bar:
        def started(name):
            bar.update(1, name)
        results = run(selected, quick=quick, full=full, on_start=started)
    rows = [r.to_dict() for r in results]
    emit(rows, as_json, COLUMNS)
