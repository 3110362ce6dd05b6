"""Analytics over HTTP and the live dashboard: the event log for admins, the public summary, the
server-sent event stream (on two gateway instances at once) and the page in a real headless
Chromium (Debian's chromium + chromedriver, driven by Selenium).

The whole suite runs for real (broker vhost, migrated databases); nothing is mocked.
"""
import json
import os
import shutil
import socket
import threading
import time

import pytest
import requests
from nameko.testing.utils import find_free_port

from gateway.service import GatewayService
from tests.e2e.conftest import SERVICE_CLASSES, Api
from tests.support import processes
from tests.support.broker import wait_until

pytestmark = pytest.mark.integration

PASSWORD = "correct horse battery staple"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


def create_admin(config, tmp_path, email="admin@example.com"):
    """An admin, as an operator makes one: `knowledge-nest create-admin` against the suite."""
    import sys

    import yaml
    path = tmp_path / "admin.yml"
    path.write_text(yaml.safe_dump({"AMQP_URI": config["AMQP_URI"], "RPC_TIMEOUT": 30}))
    command = [os.path.join(os.path.dirname(sys.executable), "knowledge-nest"),
               "--config", str(path), "create-admin", "--email", email, "--name", "Site Admin",
               "--password-stdin"]
    done = processes.run(command, input=PASSWORD + "\n", timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return email


class SseReader:
    """Reads ``/api/events/stream`` in a thread; ``events`` are the parsed ``data:`` payloads."""

    def __init__(self, base_url):
        self.events = []
        self.response = requests.get(base_url + "/api/events/stream", stream=True, timeout=60)
        assert self.response.status_code == 200
        assert self.response.headers["Content-Type"].startswith("text/event-stream")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for line in self.response.iter_lines(decode_unicode=True):
                if line and line.startswith("data: "):
                    self.events.append(json.loads(line[len("data: "):]))
        except Exception:  # closed by the test
            pass

    def of_type(self, event_type):
        return [event for event in self.events if event["event_type"] == event_type]

    def close(self):
        # Shut the socket down under the reading thread (closing the response from here while
        # it reads is a reentrant call): its read ends, then the response is closed.
        try:
            self.response.raw._connection.sock.shutdown(socket.SHUT_RDWR)
        except (AttributeError, OSError):
            pass
        self.thread.join(timeout=10)
        self.response.close()


@pytest.fixture
def suite(runner_factory, suite_config):
    """The suite with two gateway instances (two processes' worth: two containers, own queues)."""
    config = suite_config()
    second = dict(config, WEB_SERVER_ADDRESS=f"127.0.0.1:{find_free_port()}")
    runner = runner_factory(config, *SERVICE_CLASSES)
    runner.start()
    other = runner_factory(second, GatewayService)
    other.start()
    apis = [Api("http://" + config["WEB_SERVER_ADDRESS"]),
            Api("http://" + second["WEB_SERVER_ADDRESS"])]
    for api in apis:
        wait_until(lambda: api.get("/health").status_code == 200, timeout=60,
                   message="the suite answering /health")
    return config, apis


@pytest.mark.parametrize("database_backend", ["sqlite"], indirect=True)
def test_event_log_for_admins_summary_for_everyone(suite, tmp_path):
    config, (api, _) = suite
    assert api.register("ada@example.com", PASSWORD, "Ada Lovelace").status_code == 201
    grace = api.register("grace@example.com", PASSWORD, "Grace Hopper", role="instructor").json()
    grace_token = api.login("grace@example.com", PASSWORD)
    course = api.post("/api/courses", token=grace_token,
                      json={"title": "Compilers", "description": "A-0"}).json()
    ada_token = api.login("ada@example.com", PASSWORD)
    assert api.post(f"/api/courses/{course['id']}/enroll", token=ada_token).status_code == 201

    def summary():
        body = api.get("/api/analytics/summary").json()
        return body if body["events_by_type"].get("course.enrolled") == 1 else None

    body = wait_until(summary, timeout=30, message="the enrollment in the summary")
    assert body["events_by_type"] == {"course.created": 1, "course.enrolled": 1,
                                      "user.registered": 2}
    assert body["enrollments_per_course"] == [
        {"course_id": course["id"], "course_title": "Compilers", "count": 1}]
    assert sum(day["count"] for day in body["registrations_per_day"]) == 2

    # the log: admins only
    assert api.get("/api/events").status_code == 401
    assert api.get("/api/events", token=ada_token).status_code == 403
    assert api.register("eve@example.com", PASSWORD, "Eve", role="admin").status_code == 400
    create_admin(config, tmp_path)
    admin_token = api.login("admin@example.com", PASSWORD)
    page = api.get("/api/events", token=admin_token).json()
    assert page["total"] == 5  # two registrations, the admin's, the course, the enrollment
    assert page["items"][0]["event_type"] == "user.registered"  # newest first: the admin
    page = api.get("/api/events", token=admin_token,
                   params={"type": "course.enrolled", "course_id": course["id"]}).json()
    assert [item["data"]["course_title"] for item in page["items"]] == ["Compilers"]
    page = api.get("/api/events", token=admin_token,
                   params={"user_id": grace["id"], "per_page": 1}).json()
    assert page["total"] == 1 and page["items"][0]["event_type"] == "user.registered"

    bad = api.get("/api/events", token=admin_token, params={"since": "yesterday", "page": 0})
    assert bad.status_code == 400
    assert set(bad.json()["fields"]) == {"since", "page"}
    assert api.get("/api/events", token=admin_token,
                   params={"colour": "red"}).json()["fields"] == {"colour": ["Unknown field."]}


@pytest.mark.parametrize("database_backend", ["sqlite"], indirect=True)
def test_every_gateway_instance_streams_every_event_without_personal_data(suite):
    _, apis = suite
    # each response starts once its gateway's feed queue is bound: no sleep needed
    readers = [SseReader(api.base_url) for api in apis]
    try:
        assert apis[0].register("lin@example.com", PASSWORD, "Lin Chen").status_code == 201
        for reader in readers:
            events = wait_until(lambda: reader.of_type("user.registered"), timeout=10,
                                message="the registration on the stream")
            assert len(events) == 1
            shown = events[0]
            assert set(shown) == {"event_id", "event_type", "timestamp", "source", "data"}
            assert set(shown["data"]) == {"user_id"}  # no email, no name on a public stream
            assert shown["source"] == "auth"
    finally:
        for reader in readers:
            reader.close()


def headless_chromium():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
@pytest.mark.parametrize("database_backend", ["sqlite"], indirect=True)
def test_dashboard_in_a_headless_browser_shows_a_registration_within_two_seconds(suite):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, (api, other) = suite
    # one registration before the page opens: the page starts from the summary
    assert api.register("pre@example.com", PASSWORD, "Pre Doe").status_code == 201
    wait_until(lambda: api.get("/api/analytics/summary").json()["events_by_type"].get(
        "user.registered") == 1, timeout=30, message="the first registration in the summary")
    browser = headless_chromium()
    try:
        browser.get(other.base_url + "/dashboard")  # the page from the second instance
        WebDriverWait(browser, 20).until(
            lambda b: b.find_element(By.ID, "status").text == "live")
        # over WebSocket, which the page's CSP (connect-src 'self') lets through to its origin
        assert browser.find_element(By.ID, "status").get_attribute(
            "data-transport") == "websocket"

        def counter(b):
            found = b.find_elements(By.CSS_SELECTOR, '#counters li[data-type="user.registered"]')
            return found[0].text.split()[-1] if found else None

        WebDriverWait(browser, 10).until(lambda b: counter(b) == "1")  # from the summary
        seeded = browser.find_element(By.ID, "rate").get_attribute("data-values").split(",")
        assert len(seeded) == 15 and sum(map(int, seeded)) == 1  # the chart, from the summary
        assert browser.execute_script(
            "return performance.getEntriesByType('resource')"
            ".every(r => r.name.startsWith(location.origin))"), "an asset from elsewhere"

        sent = time.monotonic()
        assert api.register("kai@example.com", PASSWORD, "Kai Doe").status_code == 201
        row = WebDriverWait(browser, 2, poll_frequency=0.05).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, 'tr[data-event-type="user.registered"]'))
        seen_after = time.monotonic() - sent
        assert seen_after < 2.0
        assert "kai@example.com" not in row[0].text and "user_id=" in row[0].text
        assert counter(browser) == "2"
        drawn = browser.find_element(By.ID, "rate").get_attribute("data-values").split(",")
        assert sum(map(int, drawn)) == 2
        logs = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
        assert logs == [], logs
    finally:
        browser.quit()


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)")
@pytest.mark.parametrize("database_backend", ["sqlite"], indirect=True)
def test_dashboard_falls_back_to_server_sent_events_when_websocket_fails(suite):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    _, (api, _) = suite
    browser = headless_chromium()
    try:
        # as behind a proxy that does not pass upgrades: every WebSocket handshake fails
        browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": """
            window.WebSocket = class extends WebSocket {
              constructor(url) { super(url.replace("/api/events/ws", "/api/events/no-ws")); }
            };"""})
        browser.get(api.base_url + "/dashboard")
        WebDriverWait(browser, 20).until(
            lambda b: b.find_element(By.ID, "status").text == "live")
        assert browser.find_element(By.ID, "status").get_attribute("data-transport") == "sse"
        assert api.register("sse@example.com", PASSWORD, "Sse Doe").status_code == 201
        WebDriverWait(browser, 5, poll_frequency=0.05).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, 'tr[data-event-type="user.registered"]'))
    finally:
        browser.quit()
