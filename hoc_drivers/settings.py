"""Every setting of hoc_drivers, declared once: name, environment variable, type, default,
description and whether it is a secret.

A setting's value comes from the first of these layers that gives one:
1. a flag: the explicit argument a caller passes (`--db PATH`, `AlertDelivery(alertmanager_url=...)`);
2. the environment variable (an empty or blank value counts as unset);
3. the settings file: TOML, read with the standard library's `tomllib`, one table per group
   (`[smtp]` then `port = 587` is the setting `smtp.port`). Which file: the CLI's `--config FILE`
   (or `use_file(path)` in Python), else $HOC_DRIVERS_CONFIG, else ./hoc-drivers.toml when it
   exists; none is fine. A key that names no setting is an error, so a typo is not ignored;
4. the declared default.

An invalid value is a `SettingError` (a ValueError: exit 2 in the CLI), one line naming the
setting and where it came from (the variable, or the key and the file). A secret's value is
never part of a message, and `describe()` shows it as *** (other values pass through
`validation.redact`).
"""
import math
import os
from dataclasses import dataclass

from .validation import redact

CONFIG_ENV_VAR = "HOC_DRIVERS_CONFIG"
DEFAULT_CONFIG_FILE = "hoc-drivers.toml"
MAX_TTL_SECONDS = 100 * 365 * 86_400  # a century; far longer TTLs overflow date arithmetic


class SettingError(ValueError):
    """An invalid setting value, or an unreadable settings file."""


def _text(raw):
    if not isinstance(raw, str):
        raise TypeError("must be text")
    return raw


def _number(raw):
    """A non-negative number of seconds."""
    try:
        value = float(raw) if isinstance(raw, (str, int, float)) and not isinstance(raw, bool) else None
    except ValueError:
        value = None
    if value is None or not math.isfinite(value):
        raise TypeError("must be a number of seconds")
    if value < 0:
        raise TypeError("must not be negative")
    return value


def _whole(raw):
    if isinstance(raw, bool) or not isinstance(raw, (str, int)) or not str(raw).strip().lstrip("-").isdigit():
        raise TypeError("must be a whole number")
    return int(raw)


def _port(raw):
    try:
        value = _whole(raw)
    except TypeError:
        value = 0
    if not 0 < value < 65536:
        raise TypeError("must be a port number (1-65535)")
    return value


def _ttl_seconds(raw):
    try:
        value = _whole(raw)
    except TypeError:
        raise TypeError("must be a whole number of seconds") from None
    if not 0 < value <= MAX_TTL_SECONDS:
        raise TypeError(f"must be positive and at most {MAX_TTL_SECONDS} (a century)")
    return value


def _backend(raw):
    if raw in ("sqlite", "postgresql"):
        return raw
    raise TypeError("must be sqlite or postgresql")


_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True,
             "false": False, "0": False, "no": False, "off": False}


def _boolean(raw):
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _BOOLEANS:
        return _BOOLEANS[raw.strip().lower()]
    raise TypeError("must be true or false")


@dataclass(frozen=True)
class Setting:
    """One setting: `name` (group.key, as in the settings file), `env` (its variable), `kind`
    (what the documentation calls its type), `parse` (raw text or TOML value -> value, raising
    TypeError with the rule broken), `default`, `description` and `secret`. `option`: (command,
    ..., parameter) of a CLI option that reads the variable itself (click `envvar`); the file's
    value becomes that option's default."""

    name: str
    env: str
    kind: str
    parse: object
    default: object
    description: str
    secret: bool = False
    option: tuple = ()


SETTINGS = {s.name: s for s in (
    Setting("database.path", "HOC_DRIVERS_DB", "path", _text, "hoc.db",
            "The SQLite file, or a postgresql:// URL (flag: --db PATH)."),
    Setting("smtp.host", "SMTP_HOST", "text", _text, "localhost", "SMTP server for e-mail alerts."),
    Setting("smtp.port", "SMTP_PORT", "port", _port, 25, "SMTP server port."),
    Setting("smtp.username", "SMTP_USERNAME", "text", _text, None,
            "SMTP login; sent only over STARTTLS (which is used whenever the server offers it)."),
    Setting("smtp.password", "SMTP_PASSWORD", "text", _text, None, "SMTP password.", secret=True),
    Setting("smtp.from_address", "SMTP_FROM_ADDRESS", "text", _text, "noreply@example.com",
            "From: address of e-mail alerts."),
    Setting("smtp.from_name", "SMTP_FROM_NAME", "text", _text, "AOS Notifications",
            "From: display name of e-mail alerts."),
    Setting("alerts.alertmanager_url", "ALERTMANAGER_URL", "URL", _text, None,
            "Alertmanager receiving alerts of channel alertmanager that carry no URL."),
    Setting("alerts.webhook_secret", "HOC_ALERT_WEBHOOK_SECRET", "text", _text, None,
            "HMAC secret signing webhook bodies (flag: alerts enqueue --webhook-secret).", secret=True,
            option=("alerts", "enqueue", "webhook_secret")),
    Setting("guard_cache.enabled", "GUARD_CACHE_ENABLED", "boolean", _boolean, True,
            "Cache the guard console's read models."),
    Setting("guard_cache.status_ttl", "GUARD_STATUS_TTL", "seconds", _number, 5,
            "TTL of a cached guard status."),
    Setting("guard_cache.snapshot_ttl", "GUARD_SNAPSHOT_TTL", "seconds", _number, 10,
            "TTL of a cached daily snapshot."),
    Setting("guard_cache.incidents_ttl", "GUARD_INCIDENTS_TTL", "seconds", _number, 5,
            "TTL of a cached incident page."),
    Setting("idempotency.ttl_seconds", "IDEMPOTENCY_TTL_SECONDS", "whole seconds", _ttl_seconds, 86_400,
            "How long an idempotency key stays valid."),
    Setting("ledger.phase", "AOS_PHASE", "text", _text, "C", "Phase recorded with discovery signals."),
    Setting("ledger.environment", "AOS_ENVIRONMENT", "text", _text, "local",
            "Environment recorded with discovery signals."),
    Setting("testing.backend", "HOC_TEST_BACKEND", "sqlite or postgresql", _backend, "sqlite",
            "Database of the pytest plugin's fixtures (postgresql: the pg extra's own server)."),
)}

_chosen_file = None  # set by use_file (the CLI's --config)
_parsed_files = {}  # absolute path -> {setting name: raw value}


def use_file(path):
    """Read settings from the TOML file `path` from now on (None: back to $HOC_DRIVERS_CONFIG /
    ./hoc-drivers.toml). The file is read (and checked) when a setting is first asked for."""
    global _chosen_file
    _chosen_file = path


def settings_file():
    """The settings file in use: the chosen one, else $HOC_DRIVERS_CONFIG, else
    ./hoc-drivers.toml if it exists, else None."""
    if _chosen_file is not None:
        return _chosen_file
    named = os.environ.get(CONFIG_ENV_VAR, "").strip()
    if named:
        return named
    return DEFAULT_CONFIG_FILE if os.path.isfile(DEFAULT_CONFIG_FILE) else None


def _flatten(table, prefix=""):
    for key, value in table.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _file_values(path):
    """The settings of file `path` by name (read once per path)."""
    key = os.path.abspath(path)
    if key not in _parsed_files:
        import tomllib  # only when there is a file to read: most runs have none

        try:
            with open(path, "rb") as file:
                values = dict(_flatten(tomllib.load(file)))
        except OSError as exc:
            raise SettingError(f"settings file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise SettingError(f"settings file {path} is not valid TOML: {exc}") from None
        unknown = sorted(set(values) - set(SETTINGS))
        if unknown:
            raise SettingError(f"settings file {path}: unknown setting {unknown[0]!r} "
                               f"(`hoc-drivers settings` lists them)")
        _parsed_files[key] = values
    return _parsed_files[key]


def check_file():
    """Read the settings file in use (if any) and check every value in it; raises SettingError."""
    path = settings_file()
    for name, raw in (_file_values(path) if path else {}).items():
        _parse(SETTINGS[name], raw, f"{name} in {path}")


def option_defaults():
    """click's `default_map` for the CLI options that read their variable themselves: the
    settings file's values (so flag > env > file holds there too)."""
    path = settings_file()
    found = {}
    for name, raw in (_file_values(path) if path else {}).items():
        *commands, parameter = SETTINGS[name].option or (None,)
        if parameter:
            table = found
            for command in commands:
                table = table.setdefault(command, {})
            table[parameter] = _parse(SETTINGS[name], raw, f"{name} in {path}")
    return found


def _parse(setting, raw, where):
    try:
        return setting.parse(raw)
    except TypeError as exc:
        shown = "" if setting.secret else f", got {raw!r}"
        raise SettingError(f"{where} {exc}{shown}") from None


def lookup(name, flag=None, environ=None):
    """(value, source) of setting `name`: `flag` if not None, else its environment variable (in
    `environ`, default os.environ), else the settings file, else the default. `source` is
    "flag", "env $VAR", "file PATH" or "default"."""
    setting = SETTINGS[name]
    if flag is not None:
        return flag, "flag"
    raw = (os.environ if environ is None else environ).get(setting.env)
    if raw is not None and raw.strip():
        return _parse(setting, raw, setting.env), f"env ${setting.env}"
    path = settings_file()
    values = _file_values(path) if path else {}
    if name in values:
        return _parse(setting, values[name], f"{name} in {path}"), f"file {path}"
    return setting.default, "default"


def default(name):
    """The declared default of setting `name`."""
    return SETTINGS[name].default


def get(name, flag=None, environ=None):
    """The value of setting `name` (see `lookup`)."""
    return lookup(name, flag, environ)[0]


def describe(flags=None):
    """Every setting as a dict (name, env, value, source, description), secrets shown as ***.
    `flags`: {name: value given on the command line}."""
    rows = []
    for name, setting in SETTINGS.items():
        value, source = lookup(name, (flags or {}).get(name))
        if setting.secret and value is not None:
            value = "***"
        elif isinstance(value, str):
            value = redact(value)
        rows.append({"name": name, "env": setting.env, "value": value, "source": source,
                     "description": setting.description})
    return rows


def reference():
    """The settings section of docs/cli.md, generated from the declarations."""
    lines = ["## Settings", "",
             "Each setting comes from a flag, else its environment variable, else the settings",
             "file, else its default. The settings file is TOML: `--config FILE` (before the",
             f"subcommand), else ${CONFIG_ENV_VAR}, else ./{DEFAULT_CONFIG_FILE} if it exists.",
             "Its tables are the groups below (`[smtp]` then `port = 587`). An invalid value or",
             "an unknown key is bad input (exit 2). Secrets are never printed;",
             "`hoc-drivers settings` shows every value and where it came from.", "",
             "| Setting | Environment | Type | Default | Description |",
             "|---|---|---|---|---|"]
    for setting in SETTINGS.values():
        default = setting.default if setting.parse is not _boolean else str(setting.default).lower()
        default = "(none)" if default is None else f"`{default}`"
        secret = " Secret." if setting.secret else ""
        lines.append(f"| `{setting.name}` | `{setting.env}` | {setting.kind} | {default} | "
                     f"{setting.description}{secret} |")
    return "\n".join(lines + ["", "Example: a ./hoc-drivers.toml, then `hoc-drivers settings smtp.port`",
                              "", "```toml", "[smtp]", 'host = "mail.example.com"', "port = 587", "",
                              "[guard_cache]", "status_ttl = 2", "```", ""])
