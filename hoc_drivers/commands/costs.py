"""CLI: cost anomalies (-> incidents) and limit breaches, the mandatory cross-domain writes."""
from decimal import Decimal, InvalidOperation

import click

from ..cross_domain import (ANOMALY_SEVERITY_MAP, GovernanceError, create_incident_from_cost_anomaly,
                            record_limit_breach)
from ..models.cost import BREACH_TYPES
from .common import (EXIT_FAILED, CliError, get_coordinator, json_option, parse_json_argument, render,
                     tenant_option, text_option)


class NonNegativeDecimal(click.ParamType):
    """A finite, non-negative decimal number, kept exact."""

    name = "decimal"

    def convert(self, value, param, ctx):
        """Text -> Decimal; anything else fails with a message naming the value."""
        if isinstance(value, Decimal):
            return value
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            self.fail(f"{value!r} is not a decimal number", param, ctx)
        if not number.is_finite() or number < 0:
            self.fail(f"{value!r} must be a finite number >= 0", param, ctx)
        return number


@click.group()
def anomaly():
    """Cost anomalies: each becomes one incident of its tenant."""


@anomaly.command("record")
@tenant_option
@text_option("--anomaly-id", required=True,
             help="Id of the anomaly; recording it again returns the same incident.")
@text_option("--type", "anomaly_type", required=True,
             help="BUDGET_EXCEEDED, USER_SPIKE, TENANT_SPIKE, DRIFT or another type.")
@click.option("--severity", required=True,
              type=click.Choice([s.lower() for s in ANOMALY_SEVERITY_MAP], case_sensitive=False),
              help="critical, high, medium or low (any case).")
@click.option("--current-cents", required=True, type=click.IntRange(min=0),
              help="Observed spend in cents.")
@click.option("--expected-cents", required=True, type=click.IntRange(min=0),
              help="Expected spend in cents.")
@text_option("--entity-type", help="What spiked: agent, user, feature... (default tenant).")
@text_option("--entity-id", help="Id of that entity.")
@text_option("--description", help="Incident description (default: generated).")
@json_option
def record_anomaly(tenant_id, anomaly_id, anomaly_type, severity, current_cents, expected_cents,
                   entity_type, entity_id, description, as_json):
    """Record a cost anomaly as an incident (one per tenant and anomaly id).

    Example: hoc-drivers anomaly record --tenant acme --anomaly-id an-1 --type BUDGET_EXCEEDED --severity high --current-cents 15000 --expected-cents 10000 --json
    """
    try:
        with get_coordinator().transaction() as tx:
            incident_id = create_incident_from_cost_anomaly(
                tx, tenant_id, anomaly_id, anomaly_type, severity, current_cents, expected_cents,
                entity_type=entity_type, entity_id=entity_id, description=description)
            output = render({"incident_id": incident_id, "tenant_id": tenant_id,
                             "anomaly_id": anomaly_id}, as_json)
    except GovernanceError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    click.echo(output)


@click.group()
def breach():
    """Limit breaches: a policy limit breached, exhausted, throttled or violated."""


@breach.command("record")
@tenant_option
@text_option("--limit-id", required=True, help="The limit that was hit.")
@click.option("--type", "breach_type", required=True,
              type=click.Choice(BREACH_TYPES), help="Kind of breach.")
@click.option("--value", required=True, type=NonNegativeDecimal(),
              help="Value when the limit was hit (exact decimal).")
@click.option("--limit", "limit_value", required=True, type=NonNegativeDecimal(),
              help="The limit (exact decimal).")
@text_option("--run", "run_id", help="Run of this tenant that hit it.")
@text_option("--incident", "incident_id", help="Incident of this tenant it belongs to.")
@click.option("--details", help="Extra details: a JSON object (or @FILE).")
@json_option
def record_breach(tenant_id, limit_id, breach_type, value, limit_value, run_id, incident_id,
                  details, as_json):
    """Record a limit breach; values are stored exactly.

    Example: hoc-drivers breach record --tenant acme --limit-id daily-spend --type BREACHED --value 150.00 --limit 100.00 --json
    """
    details = parse_json_argument(details, "--details")
    if details is not None and not isinstance(details, dict):
        raise CliError("--details: must be a JSON object")
    try:
        with get_coordinator().transaction() as tx:
            breach_id = record_limit_breach(tx, tenant_id, limit_id, breach_type, value,
                                            limit_value, run_id=run_id, incident_id=incident_id,
                                            details=details)
            output = render({"breach_id": breach_id, "tenant_id": tenant_id, "limit_id": limit_id,
                             "breach_type": breach_type, "value_at_breach": value,
                             "limit_value": limit_value}, as_json)
    except GovernanceError as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    click.echo(output)
