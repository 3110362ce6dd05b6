"""Following one request through the suite: its call id in every service's log records, and the
Prometheus counters on the gateway's GET /metrics moving after a request and a handled event."""
import logging
import re

import pytest

from tests.support.broker import wait_until

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
CONTAINER = "services.kit.logs.LoggingServiceContainer"


def sample(text, name, **labels):
    """The value of one Prometheus sample in ``text`` (0 when absent)."""
    for line in text.splitlines():
        match = re.match(r"^(\w+)\{(.*)\} (\S+)$", line)
        if not match or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(match.group(3))
    return 0.0


def test_one_register_request_is_followed_by_its_call_id_through_every_service(
        start_suite, caplog):
    caplog.set_level(logging.INFO)
    api = start_suite(SERVICE_CONTAINER_CLS=CONTAINER)
    caplog.clear()
    response = api.register("traced@example.com", PASSWORD, "Traced")
    assert response.status_code == 201, response.text

    def records_of(service):
        return [record for record in caplog.records
                if getattr(record, "service", None) == service
                and getattr(record, "origin_call_id", None)]

    def handled_by_notification():
        return [record for record in records_of("notification")
                if "handled by notification" in record.getMessage()]

    wait_until(handled_by_notification, timeout=60, message="notification handling the event")
    gateway = [record for record in records_of("gateway")
               if "/api/auth/register -> 201" in record.getMessage()]
    assert len(gateway) == 1
    origin = gateway[0].call_id
    assert origin.startswith("gateway.register.") and gateway[0].origin_call_id == origin
    auth = [record for record in records_of("auth") if record.origin_call_id == origin]
    assert auth and all(record.call_id.startswith("auth.register.") for record in auth)
    notification = [record for record in handled_by_notification()
                    if record.origin_call_id == origin]
    assert notification, [record.origin_call_id for record in handled_by_notification()]
    assert notification[0].event_id and notification[0].call_id.startswith("notification.")
    # the chain: gateway -> auth -> notification
    assert notification[0].call_id_stack[:2] == [origin, auth[0].call_id]


def test_metrics_count_requests_and_handled_events(api):
    def metrics():
        response = api.get("/metrics")
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return response.text

    before = metrics()
    route = {"method": "POST", "route": "/api/auth/register"}
    created = dict(route, status="201")
    handled = {"service": "notification", "event_type": "user.registered"}
    published = {"service": "auth", "event_type": "user.registered"}

    assert api.register("counted@example.com", PASSWORD, "Counted").status_code == 201
    assert api.register("counted@example.com", PASSWORD, "Counted").status_code == 409

    # a worker's counters are updated as it ends, just after its response is on its way
    increments = [("knowledge_nest_http_requests_total", created, 1),
                  ("knowledge_nest_http_requests_total", dict(route, status="409"), 1),
                  ("knowledge_nest_http_request_duration_seconds_count", route, 2)]

    def counted():
        after = metrics()
        return all(sample(after, name, **labels) >= sample(before, name, **labels) + increment
                   for name, labels, increment in increments) and after

    after = wait_until(counted, timeout=30, interval=0.2, message="the request counters moving")
    for name, labels, increment in increments:
        assert sample(after, name, **labels) == sample(before, name, **labels) + increment, name

    wait_until(lambda: sample(metrics(), "knowledge_nest_events_handled_total", **handled)
               > sample(before, "knowledge_nest_events_handled_total", **handled),
               timeout=60, interval=0.2, message="the handled-events counter moving")
    # counted once the relay has marked it sent, which may be after a consumer handled it
    wait_until(lambda: sample(metrics(), "knowledge_nest_events_published_total", **published)
               > sample(before, "knowledge_nest_events_published_total", **published),
               timeout=30, interval=0.2, message="the published-events counter moving")
