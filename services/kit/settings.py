"""The typed settings reader, and the kit's settings (nameko's own among them).

Every key the code reads from config.yml is declared once, with its type, its default and one
line of doc: the kit's and nameko's here, a service's own in ``services/<name>/settings.py``,
the gateway's in ``gateway/settings.py``. A module reads one with ``RPC_TIMEOUT.read(config)``;
config.yml lists the same keys with the same defaults (tests/unit/test_settings.py holds the two
to each other).

Values arrive YAML-typed from config.yml, or as what nameko made of an environment variable in
``${VAR:default}``: the variable's text, YAML-parsed ("5" is 5, "true" True, "" None, "1,5,30"
stays a string). ``read`` turns either form into the declared type, here and nowhere else; None
or "" is "not set", which reads as the declared default. A value that cannot be read raises
``SettingError`` naming the key; the kit's service container reads every declared setting
before it starts and turns that into ``refuse_to_start`` (services/kit/logs.py), so ``nameko
run`` exits 1 with that one line.
"""
import importlib

from nameko.exceptions import ConfigurationError

REQUIRED = object()  # the default of a setting that has none: reading it unset is an error
AS_DEFAULT = object()  # an empty value reads as the default (unless a setting says otherwise)
DECLARED = {}  # key -> Setting, of every settings module imported so far (check_all reads them)


class SettingError(ConfigurationError, ValueError):
    """A setting is missing or its value cannot be read as its type."""


class Setting:
    """One config key: ``parse`` turns a set value into its type; an absent one reads as
    ``default``, an empty one (None, "") as ``empty``, which is ``default`` unless declared."""

    def __init__(self, key, parse, default, doc, empty=AS_DEFAULT):
        self.key, self.parse, self.default, self.doc = key, parse, default, doc
        self.empty = default if empty is AS_DEFAULT else empty
        DECLARED[key] = self

    def read(self, config):
        config = config or {}
        value = config.get(self.key)
        if value is None or (isinstance(value, str) and not value.strip()):
            unset = self.default if self.key not in config else self.empty
            if unset is REQUIRED:
                raise SettingError(f"{self.key} is not set ({self.doc})")
            return dict(unset) if isinstance(unset, dict) else unset
        try:
            return self.parse(value)
        except (TypeError, ValueError, ImportError, AttributeError) as exc:
            raise SettingError(f"{self.key}: cannot read {value!r}: {exc}") from None

    def __repr__(self):
        return f"Setting({self.key!r})"


def check_all(config):
    """Read every declared setting once: the first that cannot be read raises its SettingError.

    The kit's container does this before any extension starts, so that a bad value stops the
    start in one line, also for a setting read only later (per request, per call)."""
    for setting in list(DECLARED.values()):
        setting.read(config)


# -- types: each turns a set value (YAML-typed, or a string from the environment) into its own --

def text(value):
    return str(value)


def integer(value):
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("not a whole number")
    return int(value.strip() if isinstance(value, str) else value)


def positive_integer(value):
    number = integer(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def seconds(value):
    if isinstance(value, bool):
        raise ValueError("not a number of seconds")
    return float(value)


TRUE, FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def flag(value):
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in TRUE + FALSE:
        raise ValueError("not true or false")
    return word in TRUE


def _items(value):
    """A YAML list, or the comma-separated (optionally bracketed) string of one."""
    if isinstance(value, str):
        value = value.strip().removeprefix("[").removesuffix("]").split(",")
    elif not isinstance(value, (list, tuple)):
        raise ValueError("not a list")
    return [item.strip() if isinstance(item, str) else item for item in value
            if not (isinstance(item, str) and not item.strip())]


def numbers(value):
    """A tuple of floats: ``[1, 5, 30]`` or ``"1,5,30"``."""
    return tuple(seconds(item) for item in _items(value))


def names(value):
    """A tuple of strings: ``[a, b]`` or ``"a,b"``."""
    return tuple(str(item) for item in _items(value))


def mapping(value):
    if not isinstance(value, dict):
        raise ValueError("not a mapping")
    return dict(value)


def _resolved(value):
    if isinstance(value, str):
        module_name, _, attribute = value.partition(":")
        value = getattr(importlib.import_module(module_name), attribute)
    return value


def imported(value):
    """A mapping, or the import path "module:attribute" of one: how config.yml hands the kit the
    application's own tables (SUBSCRIPTIONS, EVENT_OWNERS) without the kit importing them."""
    return mapping(_resolved(value))


def imported_names(value):
    """A list of names, or the import path "module:attribute" of one (SHELL_EVENT_EXCHANGES)."""
    return names(_resolved(value))


def one_of(*choices):
    def choice(value):
        word = str(value).strip().lower()
        if word not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}")
        return word
    return choice


def ssl_options(value):
    """nameko's AMQP_SSL: a mapping of ssl options, or a flag."""
    return dict(value) if isinstance(value, dict) else flag(value)


# -- nameko's own keys (nameko reads them itself; the kit reads some too) -----------------------

AMQP_URI = Setting("AMQP_URI", text, REQUIRED, "the broker's URL (nameko's)")
AMQP_SSL = Setting("AMQP_SSL", ssl_options, None,
                   "nameko's TLS to the broker: true, or a mapping of ssl options")
HEARTBEAT = Setting("HEARTBEAT", seconds, 15.0,
                    "AMQP heartbeat seconds (nameko's own default, when the key is absent, is 60)")
MAX_WORKERS = Setting("max_workers", integer, 10, "workers per service instance (nameko's)")
WEB_SERVER_ADDRESS = Setting("WEB_SERVER_ADDRESS", text, "127.0.0.1:8000",
                             "the gateway's [host:]port (nameko's web server; its own default, "
                             "when the key is absent, is 0.0.0.0:8000)")
SERVICE_CONTAINER_CLS = Setting("SERVICE_CONTAINER_CLS", text, None,
                                "nameko's container class (unset: nameko's ServiceContainer)")
LOGGING = Setting("LOGGING", mapping, None, "nameko's logging.config.dictConfig")

# -- the kit's ---------------------------------------------------------------------------------

RABBITMQ_HOSTS = Setting("RABBITMQ_HOSTS", names, (),
                         "host:port of every broker node; replaces AMQP_URI's host")
PREFETCH_COUNT = Setting("PREFETCH_COUNT", integer, 20,
                         "messages each event consumer takes ahead of its workers")
EVENT_MAX_BATCH = Setting("EVENT_MAX_BATCH", positive_integer, None,
                          "events per transaction of a batch handler at most (unset: each "
                          "handler's own max_batch)")
DB_URIS = Setting("DB_URIS", mapping, {}, "the database URL of each '<service>:Base'")
DB_POOL_SIZE = Setting("DB_POOL_SIZE", integer, 0,
                       "PostgreSQL connections kept per instance (0: max_workers + 3)")
PUBLISH_CONFIRM_TIMEOUT = Setting("PUBLISH_CONFIRM_TIMEOUT", seconds, 10.0,
                                  "seconds to wait for the broker's publisher confirms")
RPC_TIMEOUT = Setting("RPC_TIMEOUT", seconds, 5.0, "seconds an RPC call waits for its reply")
EVENT_RETRY_DELAYS = Setting("EVENT_RETRY_DELAYS", numbers, (1.0, 5.0, 30.0),
                             "seconds before each retry of a failing handler")
EVENT_TTL = Setting("EVENT_TTL", mapping, {},
                    "seconds an event of each type may wait in a queue (null: never expires)")
EVENT_PRIORITY = Setting("EVENT_PRIORITY", mapping, {}, "priority 0-9 of each event type")
QUEUE_TYPE = Setting("QUEUE_TYPE", one_of("classic", "quorum"), "classic",
                     "the consumer queues' type: classic or quorum")
SUBSCRIPTIONS = Setting("SUBSCRIPTIONS", imported, {},
                        "the routing contract {queue: binding keys}, or its import path")
EXTRA_SUBSCRIPTIONS = Setting("EXTRA_SUBSCRIPTIONS", mapping, {},
                              "{queue: binding keys} of consumers outside this code")
SHELL_EVENT_EXCHANGES = Setting("SHELL_EVENT_EXCHANGES", imported_names, (),
                                "more '<name>.events' exchanges of nameko shell to bind, or "
                                "their import path")
EVENT_TRUST = Setting("EVENT_TRUST", flag, False,
                      "consumers park events not published by their type's owner")
EVENT_OWNERS = Setting("EVENT_OWNERS", imported, {},
                       "{event type: owning service}, or its import path")
EVENT_PUBLISHERS = Setting("EVENT_PUBLISHERS", mapping, {}, "{service: its broker user}")
EVENT_OPERATORS = Setting("EVENT_OPERATORS", names, (),
                          "broker users that may publish any event type")
OUTBOX_POLL_INTERVAL = Setting("OUTBOX_POLL_INTERVAL", seconds, 2.0,
                               "seconds between sweeps of the outbox for unsent events")
OUTBOX_BATCH_SIZE = Setting("OUTBOX_BATCH_SIZE", integer, 500,
                            "outbox rows published per batch")
OUTBOX_RETENTION = Setting("OUTBOX_RETENTION", seconds, 7 * 24 * 3600.0,
                           "seconds a sent outbox row is kept")
INBOX_RETENTION = Setting("INBOX_RETENTION", seconds, 30 * 24 * 3600.0,
                          "seconds an inbox record is kept")
RETENTION_INTERVAL = Setting("RETENTION_INTERVAL", seconds, 600.0,
                             "seconds between retention sweeps")
RETENTION_BATCH_SIZE = Setting("RETENTION_BATCH_SIZE", integer, 1000,
                               "rows the retention sweep deletes per transaction")
METRICS_PORT = Setting("METRICS_PORT", integer, None,
                       "the port each process serves its Prometheus metrics on (unset: none)")
