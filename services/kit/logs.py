"""Logs that say which service said what, and for which request and event.

Every log record gets these attributes (``-`` / ``None`` when they do not apply):

    service         the nameko service whose worker or extension thread logged it (else from the
                    logger's name: ``services.<name>...`` or ``gateway...``)
    call_id         this worker's nameko call id, ``<service>.<method>.<uuid>``
    origin_call_id  the first call id of the chain: the HTTP request (``gateway.<route>.<uuid>``)
                    or RPC call that started it all; nameko carries the chain (``call_id_stack``)
                    in every RPC message and the kit's outbox stores it with every event, so a
                    grep for one request's origin_call_id finds every service it touched
    event_id        the event a handler is working on

config.yml wires it up::

    SERVICE_CONTAINER_CLS: services.kit.logs.LoggingServiceContainer   # records the context
    LOGGING: ... formatters: {console: {(): services.kit.logs.Formatter, format: plain|json}}

``LOG_FORMAT=json`` gives one JSON object per line (for a log shipper), through
python-json-logger: the fields above, and every ``extra=`` field a log call passes
(``log.info("sent", extra={"notification_id": 7})`` gives ``"notification_id": 7``); ``plain``
(the default) one readable line.
"""
import logging
import time

from eventlet.corolocal import local
from nameko.containers import ServiceContainer
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from services.kit.amqp import apply_broker_hosts
from services.kit.config import refuse_to_start
from services.kit.settings import SettingError, check_all

_context = local()  # per greenthread: worker_ctx, or the service an extension thread serves


def _service_from_logger(name):
    parts = name.split(".")
    if parts[0] == "gateway":
        return "gateway"
    if len(parts) >= 2 and parts[0] == "services" and parts[1] != "kit":
        return parts[1]
    return None


def current_context():
    """(service, call_id, origin_call_id, call_id_stack, event_id) of the running greenthread."""
    worker_ctx = getattr(_context, "worker_ctx", None)
    if worker_ctx is None:
        return getattr(_context, "service", None), None, None, None, None
    stack = worker_ctx.call_id_stack
    event = worker_ctx.args[0] if worker_ctx.args else None
    return (worker_ctx.service_name, worker_ctx.call_id, stack[0] if stack else None, stack,
            getattr(event, "event_id", None) if hasattr(event, "event_type") else None)


_base_factory = None


def _record_factory(*args, **kwargs):
    record = _base_factory(*args, **kwargs)
    service, call_id, origin, stack, event_id = current_context()
    record.service = service or _service_from_logger(record.name)
    record.call_id = call_id
    record.origin_call_id = origin
    record.call_id_stack = stack
    record.event_id = event_id
    return record


def install():
    """Make every new log record carry the context above (idempotent)."""
    global _base_factory
    if _base_factory is None:
        _base_factory = logging.getLogRecordFactory()
        logging.setLogRecordFactory(_record_factory)


class LoggingServiceContainer(ServiceContainer):
    """nameko's container, remembering per greenthread which worker or service is running, so
    that log records can say so (``SERVICE_CONTAINER_CLS`` in config)."""

    def __init__(self, service_cls, config):
        # RABBITMQ_HOSTS -> the failover AMQP_URI, before any extension reads it
        apply_broker_hosts(config)
        super().__init__(service_cls, config)
        install()

    def start(self):
        # here, not in the extensions' setup: those run in greenthreads, whose errors eventlet
        # prints with a traceback before nameko sees them
        try:
            check_all(self.config)
        except SettingError as exc:
            refuse_to_start(str(exc))
        super().start()

    def _run_worker(self, worker_ctx, handle_result):
        _context.worker_ctx = worker_ctx
        try:
            return super()._run_worker(worker_ctx, handle_result)
        finally:
            _context.worker_ctx = None

    def spawn_managed_thread(self, fn, identifier=None):
        service_name = self.service_name

        def run_as_service():
            _context.service = service_name
            return fn()

        if identifier is None:
            identifier = getattr(fn, "__name__", "<unknown>")
        return super().spawn_managed_thread(run_as_service, identifier)


FIELDS = ("service", "call_id", "origin_call_id", "event_id")


class JsonLines(JsonFormatter):
    """One JSON object per record: time (UTC), level, logger, message, the context FIELDS that
    are set, call_id_stack, every ``extra=`` field, then exception/stack when there is one."""

    def __init__(self, datefmt=None):
        # the context attributes every record carries are written only when set
        super().__init__("%(message)s", datefmt=datefmt, json_ensure_ascii=False,
                         reserved_attrs=[*RESERVED_ATTRS, *FIELDS, "call_id_stack"])

    def add_fields(self, log_record, record, message_dict):
        log_record["time"] = (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                              + f".{int(record.msecs):03d}Z")
        log_record["level"] = record.levelname
        log_record["logger"] = record.name
        log_record["message"] = record.message
        log_record.update({field: getattr(record, field) for field in FIELDS
                           if getattr(record, field, None)})
        if getattr(record, "call_id_stack", None):
            log_record["call_id_stack"] = list(record.call_id_stack)
        super().add_fields(log_record, record, message_dict)
        for ours, theirs in (("exception", "exc_info"), ("stack", "stack_info")):
            if log_record.get(theirs):
                log_record[ours] = log_record.pop(theirs)


class Formatter(logging.Formatter):
    """``format: plain`` (one readable line) or ``format: json`` (one JSON object per line).

    plain: ``2026-11-26 20:00:00,123 INFO    auth [services.auth.commands] registered user 7
    call_id=auth.register.… origin=gateway.register.… event_id=…``
    """

    PLAIN = "%(asctime)s %(levelname)-7s %(service)s [%(name)s] %(message)s"

    def __init__(self, format="plain", datefmt=None, **kwargs):
        fmt = format if format not in ("plain", "json") else self.PLAIN
        self.json = format == "json"
        self.json_lines = JsonLines(datefmt) if self.json else None
        if format not in ("plain", "json") and "%(" not in format:
            raise ValueError(f"LOG_FORMAT must be plain or json, not {format!r}")
        super().__init__(fmt=fmt, datefmt=datefmt)

    @staticmethod
    def _fields(record):
        if not hasattr(record, "service"):  # made before install(), or by another factory
            record.service = _service_from_logger(record.name)
        return {field: getattr(record, field, None) for field in FIELDS}

    def format(self, record):
        fields = self._fields(record)
        if self.json:
            return self.json_lines.format(record)
        record.service = fields["service"] or "-"  # for the format string only
        try:
            line = super().format(record)
        finally:
            record.service = fields["service"]
        extra = []
        if fields["call_id"]:
            extra.append(f"call_id={fields['call_id']}")
        if fields["origin_call_id"] and fields["origin_call_id"] != fields["call_id"]:
            extra.append(f"origin={fields['origin_call_id']}")
        if fields["event_id"]:
            extra.append(f"event_id={fields['event_id']}")
        if not extra:
            return line
        first, newline, rest = line.partition("\n")  # keep a traceback below the fields
        return first + "  " + " ".join(extra) + newline + rest
