"""CLI: the alert queue — enqueue threshold alerts, stats, send, retry-failed, purge."""
import math
import signal
import sys
from datetime import timedelta

import click

from ..alert_driver import AlertQueueReader, AlertQueueWriter, delete_old_alerts
from ..alert_emitter import AlertConfig, AlertEmitter, ThresholdSignal
from ..alert_sender import AlertDelivery, AlertSender
from ..models.alerts import ALERT_STATUSES
from ..models.base import utcnow
from .common import (EXIT_FAILED, CliError, emit, get_coordinator, get_db, json_option, render, tenant_option,
                     text_option)

# A drain of at least this many due alerts shows a progress bar (on stderr).
PROGRESS_THRESHOLD = 100


@click.group()
def alerts():
    """The offline-first alert queue and its sender."""


@alerts.command("enqueue")
@tenant_option
@text_option("--policy", "policy_id", required=True, help="Policy whose threshold was reached.")
@text_option("--run", "run_id", required=True, help="Run that reached it.")
@text_option("--metric", required=True, help="Metric, e.g. cost, token_usage, step_count.")
@click.option("--current", "current_value", type=float, required=True, help="Current value.")
@click.option("--threshold", "threshold_value", type=float, required=True, help="Threshold value.")
@click.option("--breach", is_flag=True, help="A breach (never throttled) instead of a near alert.")
@text_option("--action", "action_taken", help="Action taken on a breach, e.g. pause, stop, kill.")
@click.option("--near-percentage", type=float, default=80.0, show_default=True,
              help="A near alert goes out from this percentage of the threshold.")
@click.option("--channel", "channels", multiple=True, default=("ui",), show_default=True,
              help="ui, webhook, slack or email (repeatable).")
@click.option("--webhook-url", help="http(s) URL receiving the JSON alert.")
@click.option("--webhook-secret", envvar="HOC_ALERT_WEBHOOK_SECRET",
              help="Signs the body (X-Signature: sha256=HMAC); env HOC_ALERT_WEBHOOK_SECRET. "
                   "Never stored, never printed.")
@click.option("--email", "email_recipients", multiple=True, help="Recipient address (repeatable).")
@click.option("--slack-url", "slack_webhook_url", help="Slack incoming-webhook URL.")
@text_option("--slack-channel", help="Slack channel, e.g. #alerts.")
@json_option
def enqueue(tenant_id, policy_id, run_id, metric, current_value, threshold_value, breach,
            action_taken, near_percentage, channels, webhook_url, webhook_secret,
            email_recipients, slack_webhook_url, slack_channel, as_json):
    """Raise a threshold alert: UI notification now, network channels queued for the sender.

    Example: hoc-drivers alerts enqueue --tenant acme --policy budget --run run-42 --metric cost --current 85 --threshold 100 --channel webhook --webhook-url http://127.0.0.1:9000/hook
    """
    try:
        config = AlertConfig(policy_id=policy_id, tenant_id=tenant_id,
                             near_threshold_percentage=near_percentage,
                             enabled_channels=list(channels), webhook_url=webhook_url,
                             webhook_secret=webhook_secret,
                             email_recipients=list(email_recipients),
                             slack_webhook_url=slack_webhook_url, slack_channel=slack_channel)
        threshold_signal = ThresholdSignal(
            tenant_id=tenant_id, run_id=run_id, policy_id=policy_id, metric=metric,
            current_value=current_value, threshold_value=threshold_value,
            signal_type="breach" if breach else "near")
        if action_taken is not None and not breach:  # in option terms, before the database opens
            raise ValueError("--action applies to breach alerts only (add --breach)")
    except ValueError as exc:
        raise CliError(str(exc)) from None
    with get_coordinator().transaction() as tx:  # the output is built before COMMIT
        result = AlertEmitter(tx).emit(threshold_signal, config, action_taken)
        text = render(result, as_json)
    click.echo(text)
    if not result["alert_sent"] and "reason" not in result:  # nothing was written
        raise CliError("no channel took the alert (see the log)", EXIT_FAILED)


@alerts.command("stats")
@json_option
def stats(as_json):
    """Queue counts (pending, sent, failed) and the oldest pending alert with its age.

    Example: hoc-drivers alerts stats --json
    """
    emit(AlertQueueReader(get_db()).fetch_queue_stats(), as_json)


@alerts.command("send")
@click.option("--once", is_flag=True, help="Deliver one batch and stop (default: until none is due).")
@click.option("--watch", is_flag=True,
              help="Keep running: deliver each alert when it falls due, until Ctrl-C or SIGTERM.")
@click.option("--poll", "poll_seconds", type=click.FloatRange(0.1, 3600), default=5.0,
              show_default=True, help="With --watch: seconds between looks for new alerts.")
@click.option("--batch", "batch_size", type=click.IntRange(1, 10_000), default=10, show_default=True,
              help="Alerts claimed per batch.")
@click.option("--timeout", type=click.FloatRange(0.1, 3600), default=10.0, show_default=True,
              help="Deadline in seconds for each whole delivery (connect, send, reply), however "
                   "slowly the receiver answers; the claim lease is derived from it.")
@json_option
def send(once, watch, poll_seconds, batch_size, timeout, as_json):
    """Deliver due alerts (webhook, Slack, e-mail, Alertmanager) with backoff on failure.

    Failed attempts are retried after min(2**n, 300) s; after max attempts an alert is failed.
    With --watch it runs until stopped (Ctrl-C or SIGTERM finish the batch in flight first).
    Example: hoc-drivers alerts send --batch 50
    """
    if once and watch:
        raise CliError("--once and --watch cannot be combined")
    for name, seconds in (("--timeout", timeout), ("--poll", poll_seconds)):
        if math.isnan(seconds):
            raise CliError(f"Invalid value for '{name}': nan is not a number of seconds")
    sender = AlertSender(get_coordinator(), AlertDelivery(timeout=timeout), batch_size=batch_size)
    if watch:
        totals = _watch(sender, poll_seconds)
    elif once:
        totals = sender.process_batch()
    else:
        due = AlertQueueReader(get_db()).count_due_alerts(utcnow())
        with click.progressbar(length=due, label="sending alerts", file=sys.stderr,
                               hidden=due < PROGRESS_THRESHOLD) as bar:
            totals = sender.drain(on_batch=lambda counts: bar.update(counts["processed"]))
    emit(totals, as_json)
    if totals["errors"]:
        raise CliError(f"{totals['errors']} database error(s) while sending (see the log)",
                       EXIT_FAILED)


def _watch(sender, poll_seconds):
    """Run `sender.serve` until SIGINT or SIGTERM; a line on stderr for each batch that did work."""
    def report(counts):
        if counts["processed"]:
            click.echo(f"sent {counts['sent']}, retried {counts['retried']}, failed "
                       f"{counts['failed']}, errors {counts['errors']}", err=True)

    def stop(signum, frame):
        sender.stop()

    previous = {signum: signal.signal(signum, stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        return sender.serve(poll_seconds, on_batch=report)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@alerts.command("retry-failed")
@click.option("--max-retries", type=click.IntRange(0, 1000), default=3, show_default=True,
              help="Extra attempts given to each failed alert.")
@json_option
def retry_failed(max_retries, as_json):
    """Put failed alerts back in the queue with more attempts, due now.

    Example: hoc-drivers alerts retry-failed --max-retries 3
    """
    with get_coordinator().transaction() as tx:  # the output is built before COMMIT
        text = render({"revived": AlertQueueWriter(tx).retry_failed_alerts(max_retries, utcnow())}, as_json)
    click.echo(text)


@alerts.command("purge")
@click.option("--days", type=click.IntRange(0, 36_500), default=30, show_default=True,
              help="Delete alerts created more than this many days ago.")
@click.option("--status", "statuses", multiple=True, default=("sent", "failed"), show_default=True,
              type=click.Choice(ALERT_STATUSES), help="Statuses to delete (repeatable).")
@json_option
def purge(days, statuses, as_json):
    """Delete old delivered and failed alerts, in steps, with a progress bar.

    Example: hoc-drivers alerts purge --days 30 --status sent --status failed
    """
    cutoff = utcnow() - timedelta(days=days)
    total = AlertQueueReader(get_db()).count_old_alerts(cutoff, statuses)
    with click.progressbar(length=total, label="purging alerts", file=sys.stderr,
                           hidden=total == 0) as bar:
        deleted = delete_old_alerts(get_coordinator(), cutoff, statuses, on_step=bar.update)
    emit({"deleted": deleted, "cutoff": cutoff, "statuses": list(statuses)}, as_json)
