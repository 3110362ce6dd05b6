"""services/kit/logs.py: every log line says which service, call and event it belongs to."""
import json
import logging
import logging.config

import pytest
from nameko.containers import WorkerContext
from nameko.testing.services import dummy, entrypoint_hook

from services.kit import logs
from services.kit.config import load_config
from services.kit.envelope import new_event


def make_record(name="services.auth.commands", message="user %s registered", args=(7,),
                exc_info=None):
    return logging.getLogger(name).makeRecord(name, logging.INFO, __file__, 1, message, args,
                                              exc_info)


class FakeContainer:
    def __init__(self, name):
        self.service_name = name
        self.config = {}


class FakeEntrypoint:
    def __init__(self, method_name):
        self.method_name = method_name


def in_worker(service, method, args=(), parent_stack=None):
    data = {"call_id_stack": parent_stack} if parent_stack else {}
    worker_ctx = WorkerContext(FakeContainer(service), None, FakeEntrypoint(method), args=args,
                               data=data)
    logs._context.worker_ctx = worker_ctx
    return worker_ctx


@pytest.fixture(autouse=True)
def installed():
    logs.install()
    yield
    logs._context.worker_ctx = None
    logs._context.service = None


def test_plain_line_names_the_service_from_the_logger_outside_a_worker():
    line = logs.Formatter("plain").format(make_record())
    assert " INFO    auth [services.auth.commands] user 7 registered" in line
    assert "call_id=" not in line
    assert " gateway [gateway.service] " in logs.Formatter().format(
        make_record("gateway.service"))
    record = make_record("nameko.runners")
    assert " - [nameko.runners] " in logs.Formatter().format(record)
    assert "service" not in json.loads(logs.Formatter("json").format(record))  # not "-"


def test_plain_line_carries_the_worker_call_id_its_origin_and_the_event():
    event = new_event("user.registered", {"user_id": 7}, source="auth")
    worker_ctx = in_worker("notification", "on_user_registered", args=(event,),
                           parent_stack=["gateway.register.1", "auth.register.2"])
    line = logs.Formatter().format(make_record("services.kit.events", "handled", ()))
    assert " notification [services.kit.events] handled" in line
    assert f"call_id={worker_ctx.call_id}" in line
    assert worker_ctx.call_id.startswith("notification.on_user_registered.")
    assert "origin=gateway.register.1" in line
    assert f"event_id={event.event_id}" in line


def test_json_line_has_every_field_and_the_traceback():
    in_worker("auth", "register", parent_stack=["gateway.register.1"])
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        record = make_record(exc_info=sys.exc_info())
    entry = json.loads(logs.Formatter("json").format(record))
    assert entry["service"] == "auth"
    assert entry["level"] == "INFO" and entry["logger"] == "services.auth.commands"
    assert entry["message"] == "user 7 registered"
    assert entry["origin_call_id"] == "gateway.register.1"
    assert entry["call_id"].startswith("auth.register.")
    assert entry["call_id_stack"] == ["gateway.register.1", entry["call_id"]]
    assert "ValueError: boom" in entry["exception"]
    assert entry["time"].endswith("Z")
    assert "event_id" not in entry


def test_an_extension_thread_logs_as_its_service():
    logs._context.service = "course"
    assert " course [services.kit.events] " in logs.Formatter().format(
        make_record("services.kit.events"))


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError):
        logs.Formatter("xml")


@pytest.mark.parametrize("log_format", ["plain", "json"])
def test_config_yml_logging_section_builds_the_formatter(monkeypatch, log_format):
    monkeypatch.setenv("LOG_FORMAT", log_format)
    config = load_config(logs.__file__.rsplit("/services/", 1)[0] + "/config.yml")
    assert config["SERVICE_CONTAINER_CLS"] == "services.kit.logs.LoggingServiceContainer"
    formatter_config = config["LOGGING"]["formatters"]["console"]
    formatter = logging.config.DictConfigurator({}).configure_custom(dict(formatter_config))
    assert isinstance(formatter, logs.Formatter)
    assert formatter.json == (log_format == "json")


class Service:
    name = "echo"

    @dummy
    def work(self):
        logging.getLogger("services.kit.somewhere").info("working")


def test_the_container_records_the_worker_for_its_log_records(caplog):
    container = logs.LoggingServiceContainer(Service, {})
    with caplog.at_level(logging.INFO, logger="services.kit.somewhere"):
        with entrypoint_hook(container, "work") as work:
            work()
    record = next(r for r in caplog.records if r.getMessage() == "working")
    assert record.service == "echo"
    assert record.call_id.startswith("echo.work.")
    assert record.origin_call_id == record.call_id


def test_json_line_keeps_the_extra_fields_of_the_call():
    in_worker("notification", "on_user_registered", parent_stack=["gateway.register.1"])
    logger = logging.getLogger("services.notification.sender")
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "not sent: %s",
                               ("timeout",), None,
                               extra={"notification_id": 7, "attempt": 2,
                                      "to": {"domain": "example.com"}, "élan": "ü"})
    line = logs.Formatter("json").format(record)
    entry = json.loads(line)
    assert entry["message"] == "not sent: timeout" and entry["level"] == "WARNING"
    assert entry["notification_id"] == 7 and entry["attempt"] == 2
    assert entry["to"] == {"domain": "example.com"} and entry["élan"] == "ü"
    assert entry["service"] == "notification" and entry["origin_call_id"] == "gateway.register.1"
    assert list(entry)[:4] == ["time", "level", "logger", "message"]
    assert "args" not in entry and "msg" not in entry and "event_id" not in entry
    assert "\n" not in line  # one object per line


def test_a_json_line_of_a_record_with_an_unserialisable_extra_still_is_json():
    record = logging.getLogger("gateway").makeRecord(
        "gateway", logging.INFO, __file__, 1, "x", (), None, extra={"what": object()})
    assert json.loads(logs.Formatter("json").format(record))["what"].startswith("<object")


def test_json_through_a_real_handler_keeps_extra(caplog, capsys):
    import sys
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logs.Formatter("json"))
    logger = logging.getLogger("services.course.commands")
    logger.addHandler(handler)
    try:
        logger.warning("course %s archived", 3, extra={"course_id": 3})
    finally:
        logger.removeHandler(handler)
    entry = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert entry["course_id"] == 3 and entry["service"] == "course"
