"""CLI: the demo — a realistic scenario through the drivers on the embedded database."""
import click

from .common import EXIT_FAILED, emit, get_coordinator, get_db, json_option


@click.command()
@json_option
def demo(as_json):
    """Run the demo scenario on the database (default ./hoc.db); safe to run again.

    Example: hoc-drivers demo --json
    """
    from ..demo import run_demo

    report = run_demo(get_db(create=True), get_coordinator())
    if as_json:
        emit(report, True)
    else:
        for step in report["steps"]:
            click.echo(f"[{step['driver']}] {step['story']}")
        click.echo(f"\n{report['summary']}")
    if not report["ok"]:
        click.get_current_context().exit(EXIT_FAILED)
