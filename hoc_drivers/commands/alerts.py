"""CLI: the alert queue — enqueue threshold alerts (with a stored config: throttled across
invocations), list / show / retry / delete alerts, stats, send, retry-failed, purge, configs."""
import functools
import math
import signal
import sys
from datetime import timedelta

import click
from click.core import ParameterSource

from ..alert_driver import ALL_TENANTS, AlertBusy, AlertQueueReader, AlertQueueWriter, delete_old_alerts
from ..alert_emitter import AlertConfig, AlertConfigReader, AlertConfigWriter, AlertEmitter, ThresholdSignal
from ..alert_sender import AlertDelivery, AlertSender
from ..models.alerts import ALERT_CHANNELS, ALERT_STATUSES
from ..models.base import utcnow
from ..validation import redact
from .common import (EXIT_FAILED, CliError, emit, full_id, get_coordinator, get_db, json_option, list_options, non_empty,
                     render, tenant_option, tenant_scope_option, text_option)

LIST_COLUMNS = ["id", "tenant_id", "channel", "status", "attempts", "next_attempt_at", "last_error",
                "created_at"]
SIGNAL_COLUMNS = ["id", "run_id", "policy_id", "signal_type", "percentage", "alert_sent",
                  "alert_channels", "timestamp"]
# Options that describe a config; `alerts enqueue --config NAME` takes them from the config.
_CONFIG_PARAMS = ("near_percentage", "channels", "webhook_url", "email_recipients",
                  "slack_webhook_url", "slack_channel")

# A drain of at least this many due alerts shows a progress bar (on stderr).
PROGRESS_THRESHOLD = 100


@click.group()
def alerts():
    """The offline-first alert queue and its sender."""


def _channel_options(command):
    """The options describing where and from when alerts go (enqueue and `config set`)."""
    for option in reversed((
            click.option("--near-percentage", type=float, default=80.0, show_default=True,
                         help="A near alert goes out from this percentage of the threshold."),
            click.option("--channel", "channels", multiple=True, default=("ui",), show_default=True,
                         help="ui, webhook, slack or email (repeatable)."),
            click.option("--webhook-url", help="http(s) URL receiving the JSON alert."),
            click.option("--email", "email_recipients", multiple=True,
                         help="Recipient address (repeatable)."),
            click.option("--slack-url", "slack_webhook_url", help="Slack incoming-webhook URL."),
            text_option("--slack-channel", help="Slack channel, e.g. #alerts."))):
        command = option(command)
    return command


def _config_kwargs(near_percentage, channels, webhook_url, email_recipients, slack_webhook_url,
                   slack_channel):
    """AlertConfig keyword arguments from the `_channel_options` values."""
    return {"near_threshold_percentage": near_percentage, "enabled_channels": list(channels),
            "webhook_url": webhook_url, "email_recipients": list(email_recipients),
            "slack_webhook_url": slack_webhook_url, "slack_channel": slack_channel}


def _scope_options(command):
    """`--tenant T` or `--all-tenants`: the command gets `tenant_id`, a tenant or ALL_TENANTS."""
    @tenant_scope_option("Across every tenant (alerts of no tenant included) instead of one.")
    @functools.wraps(command)
    def scoped(tenant_id, all_tenants, **kwargs):
        return command(tenant_id=ALL_TENANTS if all_tenants else tenant_id, **kwargs)
    return scoped


@alerts.command("enqueue")
@tenant_option
@text_option("--policy", "policy_id", help="Policy whose threshold was reached (required without --config).")
@text_option("--run", "run_id", required=True, help="Run that reached it.")
@text_option("--metric", required=True, help="Metric, e.g. cost, token_usage, step_count.")
@click.option("--current", "current_value", type=float, required=True, help="Current value.")
@click.option("--threshold", "threshold_value", type=float, required=True,
              help="Threshold value (above 0).")
@click.option("--breach", is_flag=True, help="A breach (never throttled) instead of a near alert.")
@text_option("--action", "action_taken", help="Action taken on a breach, e.g. pause, stop, kill.")
@text_option("--config", "config_name",
             help="A stored config (`alerts config set`): its channels and policy, and throttling "
                  "that holds across invocations; the signal is kept in the history.")
@_channel_options
@click.option("--webhook-secret", envvar="HOC_ALERT_WEBHOOK_SECRET",
              help="Signs the body (X-Signature: sha256=HMAC); env HOC_ALERT_WEBHOOK_SECRET. "
                   "Never stored, never printed.")
@json_option
@click.pass_context
def enqueue(ctx, tenant_id, policy_id, run_id, metric, current_value, threshold_value, breach,
            action_taken, config_name, webhook_secret, as_json, **channel_options):
    """Raise a threshold alert: UI notification now, network channels queued for the sender.

    Without --config a near alert is never throttled (nothing is remembered between runs).
    Example: hoc-drivers alerts enqueue --tenant acme --policy budget --run run-42 --metric cost --current 85 --threshold 100 --channel webhook --webhook-url http://127.0.0.1:9000/hook
    """
    stored = None
    try:
        if config_name is not None:
            given = [param.opts[0] for param in ctx.command.params if param.name in _CONFIG_PARAMS
                     and ctx.get_parameter_source(param.name) is not ParameterSource.DEFAULT]
            if given:
                raise ValueError(f"--config takes the channels from the stored config; drop "
                                 f"{', '.join(given)}")
        else:
            if policy_id is None:
                raise ValueError("Missing option '--policy' (or name a stored config with --config)")
            config = AlertConfig(policy_id=policy_id, tenant_id=tenant_id, webhook_secret=webhook_secret,
                                 **_config_kwargs(**channel_options))
        if action_taken is not None and not breach:  # in option terms, before the database opens
            raise ValueError("--action applies to breach alerts only (add --breach)")
        if threshold_value == 0:  # every percentage of it is undefined: nothing could be sent
            raise ValueError("--threshold must be above 0")
        if config_name is not None:
            stored = AlertConfigReader(get_db()).get(tenant_id, config_name)
            if stored is None:
                raise CliError(f"no alert config {config_name!r} for tenant {tenant_id!r} "
                               f"(store one with `hoc-drivers alerts config set`)", EXIT_FAILED)
            if policy_id not in (None, stored["policy_id"]):
                raise ValueError(f"--policy {policy_id} differs from config {config_name!r}'s "
                                 f"policy {stored['policy_id']}")
            policy_id = stored["policy_id"]
        threshold_signal = ThresholdSignal(
            tenant_id=tenant_id, run_id=run_id, policy_id=policy_id, metric=metric,
            current_value=current_value, threshold_value=threshold_value,
            signal_type="breach" if breach else "near")
    except ValueError as exc:
        raise CliError(str(exc)) from None
    with get_coordinator().transaction() as tx:  # the output is built before COMMIT
        emitter = AlertEmitter(tx)
        if stored is None:
            result = emitter.emit(threshold_signal, config, action_taken)
        else:
            result = emitter.emit_stored(config_name, threshold_signal, action_taken, webhook_secret)
        text = render(result, as_json)
    click.echo(text)
    if not result["alert_sent"] and "reason" not in result:  # nothing was written
        raise CliError("no channel took the alert (see the log)", EXIT_FAILED)


@alerts.command("stats")
@_scope_options
@json_option
def stats(tenant_id, as_json):
    """Queue counts (pending, sent, failed) and the oldest pending alert with its age, of one
    tenant (or of the whole queue with --all-tenants).

    Example: hoc-drivers alerts stats --tenant acme --json
    """
    emit(AlertQueueReader(get_db()).fetch_stats(tenant_id), as_json)


@alerts.command("list")
@_scope_options
@click.option("--status", type=click.Choice(ALERT_STATUSES), help="Only alerts with this status.")
@click.option("--channel", type=click.Choice(ALERT_CHANNELS), help="Only alerts on this channel.")
@text_option("--destination", help="Only alerts whose URL or an e-mail recipient contains this text.")
@list_options(50, "alerts created")
def list_alerts(tenant_id, status, channel, destination, window, as_json):
    """List alerts newest first, with attempts, next attempt and last error.

    Example: hoc-drivers alerts list --tenant acme --status failed --since 1d
    """
    rows = AlertQueueReader(get_db()).list_alerts(tenant_id, status, channel, destination, **window)
    emit([row.to_dict() for row in rows], as_json, LIST_COLUMNS)


def _alert_detail(alert, now):
    """Everything about one alert: the summary, its destination (credentials redacted; header
    names only), payload, last attempt and whether a sender is delivering it now."""
    destination = dict(alert.destination or {})
    if "url" in destination:
        destination["url"] = redact(destination["url"])
    if "headers" in destination:
        destination["headers"] = sorted(destination["headers"])
    delivering = alert.status == "pending" and alert.claim_token is not None and alert.next_attempt_at > now
    return {**alert.to_dict(), "destination": destination, "payload": alert.payload,
            "last_attempt_at": alert.last_attempt_at, "being_delivered": delivering}


def _alert_id_command(name):
    """An `alerts NAME ID` command: the alert id argument (a unique prefix will do; ambiguous:
    exit 2), the tenant scope and --json."""
    def decorate(function):
        @functools.wraps(function)
        def with_full_id(alert_id, tenant_id, **kwargs):
            reader = AlertQueueReader(get_db())
            full = full_id(lambda: reader.full_alert_id(tenant_id, alert_id))
            return function(alert_id=full or alert_id, tenant_id=tenant_id, **kwargs)
        command = json_option(_scope_options(with_full_id))
        return alerts.command(name)(click.argument("alert_id", callback=non_empty)(command))
    return decorate


@_alert_id_command("show")
def show(alert_id, tenant_id, as_json):
    """Show one alert: destination, payload, attempts, last error.

    Example: hoc-drivers alerts show 3f2a9c... --tenant acme
    """
    alert = AlertQueueReader(get_db()).get_alert(tenant_id, alert_id)
    emit(_alert_detail(_found(alert, alert_id, tenant_id), utcnow()), as_json)


def _found(alert, alert_id, tenant_id):
    """`alert`, or exit 1 naming what was not found."""
    if alert is None:
        where = "in the queue" if tenant_id == ALL_TENANTS else f"for tenant {tenant_id!r}"
        raise CliError(f"alert {alert_id!r} not found {where}", EXIT_FAILED)
    return alert


def _change_alert(alert_id, tenant_id, as_json, change):
    """Apply `change(writer, tenant, id, now)` in one transaction and print the alert (rendered
    before the COMMIT); exit 1 when it is not found or busy."""
    now = utcnow()
    try:
        with get_coordinator().transaction() as tx:
            alert = _found(change(AlertQueueWriter(tx), tenant_id, alert_id, now), alert_id, tenant_id)
            text = render(_alert_detail(alert, now), as_json)
    except AlertBusy as exc:
        raise CliError(str(exc), EXIT_FAILED) from None
    click.echo(text)


@_alert_id_command("retry")
def retry(alert_id, tenant_id, as_json):
    """Make a pending or failed alert due now (with an attempt left); exit 1 for a sent alert
    or one being delivered.

    Example: hoc-drivers alerts retry 3f2a9c... --tenant acme
    """
    _change_alert(alert_id, tenant_id, as_json, AlertQueueWriter.retry_alert)


@_alert_id_command("delete")
def delete(alert_id, tenant_id, as_json):
    """Delete one alert and print it; exit 1 (nothing deleted) while a sender is delivering it.

    Example: hoc-drivers alerts delete 3f2a9c... --tenant acme
    """
    _change_alert(alert_id, tenant_id, as_json, AlertQueueWriter.delete_alert)


@alerts.group("config")
def config_group():
    """Named alert configs: channels, near threshold and throttling, stored per tenant."""


@config_group.command("set")
@click.argument("name", callback=non_empty)
@tenant_option
@text_option("--policy", "policy_id", required=True, help="Policy the config alerts for.")
@_channel_options
@click.option("--min-interval", "min_alert_interval_seconds", type=click.FloatRange(0, 86_400 * 365),
              default=60.0, show_default=True, help="Seconds between two near alerts (throttle).")
@click.option("--max-per-run", "max_alerts_per_run", type=click.IntRange(0, 1_000_000), default=10,
              show_default=True, help="Near alerts one run gets at most.")
@click.option("--no-near", "near_off", is_flag=True, help="Send no near-threshold alerts.")
@click.option("--no-breach", "breach_off", is_flag=True, help="Send no breach alerts.")
@json_option
def config_set(name, tenant_id, policy_id, min_alert_interval_seconds, max_alerts_per_run, near_off,
               breach_off, as_json, **channel_options):
    """Store (or replace the settings of) a named config; its throttling state is kept.

    The webhook secret is never stored: give it to `alerts enqueue` (or its environment variable).
    Example: hoc-drivers alerts config set budget-hook --tenant acme --policy budget --channel webhook --webhook-url https://hooks.example.com/x --min-interval 300
    """
    try:
        config = AlertConfig(policy_id=policy_id, tenant_id=tenant_id,
                             near_threshold_enabled=not near_off, breach_alert_enabled=not breach_off,
                             min_alert_interval_seconds=min_alert_interval_seconds,
                             max_alerts_per_run=max_alerts_per_run, **_config_kwargs(**channel_options))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    with get_coordinator().transaction() as tx:
        AlertConfigWriter(tx).save(tenant_id, name, config)
        text = render(AlertConfigReader(tx.db).get(tenant_id, name), as_json)
    click.echo(text)


@config_group.command("show")
@click.argument("name", callback=non_empty)
@tenant_option
@json_option
def config_show(name, tenant_id, as_json):
    """Show a stored config with its throttling state (last near alert, alerts sent).

    Example: hoc-drivers alerts config show budget-hook --tenant acme
    """
    stored = AlertConfigReader(get_db()).get(tenant_id, name)
    if stored is None:
        raise CliError(f"no alert config {name!r} for tenant {tenant_id!r}", EXIT_FAILED)
    emit(stored, as_json)


@alerts.command("history")
@tenant_option
@text_option("--run", "run_id", help="Only the signals of this run.")
@list_options(50, "signals raised")
def history(tenant_id, run_id, window, as_json):
    """The threshold signals raised with stored configs (throttled ones too), newest first.

    Example: hoc-drivers alerts history --tenant acme --run run-42
    """
    rows = AlertConfigReader(get_db()).list_signals(tenant_id, run_id, **window)
    emit([row.__data__ for row in rows], as_json, SIGNAL_COLUMNS)


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
