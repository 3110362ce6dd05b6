"""The notification service against the real broker, real databases and a real SMTP server.

The SMTP server is aiosmtpd in a subprocess on loopback (this test process is monkey-patched by
eventlet; aiosmtpd's asyncio loop runs undisturbed in its own process). It writes every message
it accepts to a directory, and can refuse the first N messages with "451 try again later".
"""
import email
import email.policy
import json
import os
import socket
import sys
import uuid

import pytest
from nameko.rpc import rpc
from nameko.testing.services import entrypoint_hook
from sqlalchemy import select

from services.kit.errors import NotFound, ValidationError
from services.notification.models import Notification
from services.notification.service import NotificationService
from tests.support import processes
from tests.support.broker import wait_until
from tests.support.db import query

pytestmark = pytest.mark.integration

SMTP_SERVER = r'''
import json, os, sys, time, uuid
from aiosmtpd.controller import Controller

port, outdir, refuse = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])


class Recorder:
    def __init__(self):
        self.refused = 0

    async def handle_DATA(self, server, session, envelope):
        if self.refused < refuse:
            self.refused += 1
            open(os.path.join(outdir, "refused-%d" % self.refused), "w").close()
            return "451 4.3.0 try again later"
        name = "%020d-%s.json" % (time.time_ns(), uuid.uuid4().hex)
        with open(os.path.join(outdir, name + ".tmp"), "w") as out:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "content": envelope.content.decode("utf-8", "replace")}, out)
        os.rename(os.path.join(outdir, name + ".tmp"), os.path.join(outdir, name))
        return "250 OK"


controller = Controller(Recorder(), hostname="127.0.0.1", port=port)
controller.start()
try:
    while True:
        time.sleep(3600)
finally:
    controller.stop()
'''


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def accepts_connections(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class SmtpServer:
    def __init__(self, directory, port):
        self.directory = directory
        self.port = port
        self.process = None

    def start(self, refuse=0):
        script = self.directory / "smtp_server.py"
        script.write_text(SMTP_SERVER)
        self.inbox = self.directory / "received"
        self.inbox.mkdir(exist_ok=True)
        self.process = processes.Popen([sys.executable, str(script), str(self.port),
                                        str(self.inbox), str(refuse)])
        wait_until(lambda: accepts_connections(self.port), timeout=30,
                   message="SMTP server listening")

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            processes.wait(self.process, timeout=10)

    def messages(self):
        """Every accepted mail: {"to", "rcpt_tos", "from", "subject", "body"}, oldest first."""
        if self.process is None:
            return []
        received = []
        for name in sorted(os.listdir(self.inbox)):
            if not name.endswith(".json"):
                continue
            raw = json.loads((self.inbox / name).read_text())
            message = email.message_from_string(raw["content"], policy=email.policy.default)
            received.append({"to": message["To"], "rcpt_tos": raw["rcpt_tos"],
                             "from": message["From"], "subject": message["Subject"],
                             "body": message.get_content()})
        return received

    def refusals(self):
        return len([name for name in os.listdir(self.inbox) if name.startswith("refused-")])

    def wait_for(self, count, timeout=30):
        return wait_until(lambda: len(self.messages()) >= count and self.messages(),
                          timeout=timeout, interval=0.1, message=f"{count} mail(s) received")


@pytest.fixture
def smtp_server(tmp_path):
    server = SmtpServer(tmp_path, free_port())
    yield server
    server.stop()


@pytest.fixture
def notification_config(services_config, smtp_server):
    def make(**overrides):
        settings = dict(MAIL_BACKEND="smtp", SMTP_HOST="127.0.0.1", SMTP_PORT=smtp_server.port,
                        MAIL_FROM="KnowledgeNest <no-reply@knowledgenest.test>",
                        MAIL_RETRY_INTERVAL=0.3, EVENT_RETRY_DELAYS=[0.5, 1, 2, 4])
        settings.update(overrides)
        return services_config("notification", **settings)
    return make


@pytest.fixture
def notification(container_factory, notification_config):
    """A running notification service (SMTP backend); its config is ``.config``."""
    def start(**overrides):
        container = container_factory(NotificationService, notification_config(**overrides))
        container.start()
        return container
    return start


def envelope(event_type, data, event_id=None):
    return {"event_id": event_id or uuid.uuid4().hex, "event_type": event_type,
            "timestamp": "2026-11-26T10:35:00.123456+00:00", "source": "test", "version": 1,
            "data": data}


def publish(plain, event_type, data, event_id=None):
    event = envelope(event_type, data, event_id)
    plain.publish(event_type, event)
    return event["event_id"]


def notifications(config):
    return query(config["DB_URIS"]["notification:Base"],
                 select(Notification).order_by(Notification.id))


def mails_to(server, address):
    return [mail for mail in server.messages() if mail["to"] == address]


def test_each_event_becomes_the_right_mail_to_the_right_person(notification, smtp_server,
                                                               plain):
    smtp_server.start()
    container = notification()

    publish(plain, "user.registered", {"user_id": 1, "email": "grace@example.com",
                                       "name": "Grace Hopper"})
    publish(plain, "user.registered", {"user_id": 2, "email": "alan@example.com",
                                       "name": "Alan Turing"})
    smtp_server.wait_for(2)
    publish(plain, "course.created", {"course_id": 10, "title": "Compilers for Everyone",
                                      "instructor_id": 1})
    smtp_server.wait_for(3)
    enrolled_id = publish(plain, "course.enrolled", {"enrollment_id": 5, "user_id": 2,
                                                     "course_id": 10,
                                                     "course_title": "Compilers for Everyone"})
    publish(plain, "review.created", {"review_id": 7, "user_id": 2, "course_id": 10,
                                      "rating": 4, "has_comment": True})
    smtp_server.wait_for(5)

    grace = mails_to(smtp_server, "grace@example.com")
    alan = mails_to(smtp_server, "alan@example.com")
    assert len(grace) == 3 and len(alan) == 2
    assert all(mail["from"] == "KnowledgeNest <no-reply@knowledgenest.test>"
               for mail in grace + alan)
    assert [mail["rcpt_tos"] for mail in alan] == [["alan@example.com"]] * 2

    welcome_grace = grace[0]
    assert "Welcome" in welcome_grace["subject"] and "Grace Hopper" in welcome_grace["subject"]
    assert "Grace Hopper" in welcome_grace["body"]
    assert "Welcome" in alan[0]["subject"] and "Alan Turing" in alan[0]["body"]

    live = [mail for mail in grace if "live" in mail["subject"]]
    assert len(live) == 1
    assert "Compilers for Everyone" in live[0]["subject"]
    assert "Compilers for Everyone" in live[0]["body"] and "Grace Hopper" in live[0]["body"]

    enrolled = alan[1]
    assert "enrolled" in enrolled["subject"] and "Compilers for Everyone" in enrolled["subject"]
    assert "Compilers for Everyone" in enrolled["body"] and "Alan Turing" in enrolled["body"]

    review = [mail for mail in grace if "review" in mail["subject"].lower()]
    assert len(review) == 1
    assert "Compilers for Everyone" in review[0]["subject"]
    assert "4 out of 5" in review[0]["body"] and "with a comment" in review[0]["body"]

    # the same notifications, as the gateway sees them over RPC: newest first, all sent
    wait_until(lambda: all(row.status == "sent" for row in notifications(container.config)),
               timeout=15, message="every notification marked sent")
    with entrypoint_hook(container, "list_notifications") as list_notifications:
        alans = list_notifications(2)
        first = list_notifications(1, page=1, per_page=2)
        rest = list_notifications(1, page=2, per_page=2)
    assert alans["total"] == 2 and alans["page"] == 1 and alans["per_page"] == 20
    assert [item["kind"] for item in alans["items"]] == ["enrollment_confirmed", "welcome"]
    newest = alans["items"][0]
    assert set(newest) == {"id", "user_id", "kind", "subject", "body", "status", "event_id",
                           "created_at", "sent_at"}
    assert newest["user_id"] == 2 and newest["status"] == "sent"
    assert newest["event_id"] == enrolled_id
    assert newest["subject"] == enrolled["subject"]
    assert newest["sent_at"].endswith("+00:00") and newest["created_at"].endswith("+00:00")
    assert first["total"] == 3
    assert [item["kind"] for item in first["items"] + rest["items"]] == [
        "new_review", "course_live", "welcome"]

    with entrypoint_hook(container, "health") as health:
        assert health() == {"service": "notification", "database": "ok"}
    with pytest.raises(ValidationError) as error:
        with entrypoint_hook(container, "list_notifications") as list_notifications:
            list_notifications(2, per_page=0)
    assert "per_page" in error.value.fields


def test_same_event_delivered_three_times_sends_one_mail(notification, smtp_server, plain):
    smtp_server.start()
    container = notification()

    event = envelope("user.registered", {"user_id": 3, "email": "ada@example.com",
                                         "name": "Ada Lovelace"})
    plain.publish("user.registered", event)
    plain.publish("user.registered", event)  # redelivered while the first may still be handled
    smtp_server.wait_for(1)
    plain.publish("user.registered", event)  # replayed after its mail went out
    publish(plain, "user.registered", {"user_id": 4, "email": "marker@example.com",
                                       "name": "Marker"})

    wait_until(lambda: mails_to(smtp_server, "marker@example.com"), timeout=30,
               message="marker mail received")
    assert len(mails_to(smtp_server, "ada@example.com")) == 1
    rows = [row for row in notifications(container.config) if row.user_id == 3]
    assert len(rows) == 1 and rows[0].event_id == event["event_id"]
    assert plain.message_count("notification.send_welcome.dlq") == 0


def test_mail_refused_for_a_while_is_sent_once_the_server_accepts(notification, smtp_server,
                                                                  plain):
    smtp_server.start(refuse=2)  # "451 try again later" for the first two mails
    container = notification()

    event_id = publish(plain, "user.registered", {"user_id": 5, "email": "linus@example.com",
                                                  "name": "Linus"})

    mails = smtp_server.wait_for(1)
    assert [mail["to"] for mail in mails] == ["linus@example.com"]
    assert smtp_server.refusals() == 2
    row = wait_until(lambda: [row for row in notifications(container.config)
                              if row.status == "sent"], timeout=15, message="marked sent")[0]
    assert row.event_id == event_id
    assert row.attempts == 3  # two refused, the third accepted
    assert row.sent_at is not None
    eventlet_sleep(1)  # a second mail would have had time to arrive
    assert len(smtp_server.messages()) == 1


def test_mail_waits_for_a_server_that_is_down_and_goes_out_when_it_is_up(notification,
                                                                         smtp_server, plain):
    container = notification()  # no SMTP server listening on its port yet

    publish(plain, "user.registered", {"user_id": 6, "email": "barbara@example.com",
                                       "name": "Barbara Liskov"})
    pending = wait_until(lambda: [row for row in notifications(container.config)
                                  if row.attempts >= 1], timeout=30,
                         message="a failed delivery attempt recorded")
    assert pending[0].status == "pending"
    assert "unavailable" in pending[0].last_error

    smtp_server.start()
    mails = smtp_server.wait_for(1, timeout=60)
    assert [mail["to"] for mail in mails] == ["barbara@example.com"]
    wait_until(lambda: notifications(container.config)[0].status == "sent", timeout=15,
               message="marked sent")


def test_seed_format_event_published_with_pika_is_mailed(notification, smtp_server, plain):
    smtp_server.start()
    container = notification()

    # exactly what the seed's publisher sends: three fields, naive timestamp, no event_id
    plain.publish("user.registered", {
        "event_type": "user.registered", "timestamp": "2024-01-15T10:30:00",
        "data": {"user_id": 123, "email": "user@example.com", "name": "John Doe"}})

    mails = smtp_server.wait_for(1)
    assert mails[0]["to"] == "user@example.com"
    assert "John Doe" in mails[0]["body"]
    with entrypoint_hook(container, "list_notifications") as list_notifications:
        page = wait_until(lambda: list_notifications(123)["items"], timeout=15,
                          message="listed")
    assert page[0]["kind"] == "welcome" and len(page[0]["event_id"]) == 32


def test_poison_message_is_dead_lettered_and_the_next_event_still_goes_out(notification,
                                                                           smtp_server, plain):
    smtp_server.start()
    # long retry delays: an unusable event must be parked at once, not after retries
    container = notification(EVENT_RETRY_DELAYS=[60, 60])

    plain.publish("user.registered", b"{not json")
    # an event, but without what a welcome needs: parked at once (InvalidEvent), not retried
    no_email = publish(plain, "user.registered", {"user_id": 7, "name": "No Email"})
    publish(plain, "user.registered", {"user_id": 8, "email": "after@example.com",
                                       "name": "After"})

    mails = smtp_server.wait_for(1)
    assert [mail["to"] for mail in mails] == ["after@example.com"]
    _, properties, body = plain.get("notification.send_welcome.dlq", timeout=30)
    assert body == b"{not json"
    assert "not JSON" in properties.headers["x-dead-letter-reason"]
    _, properties, body = plain.get("notification.send_welcome.dlq", timeout=30)
    assert json.loads(body)["event_id"] == no_email
    assert properties.headers["x-exception-type"] == "InvalidEventData"
    assert properties.headers["x-attempts"] == 1
    assert "email" in properties.headers["x-dead-letter-reason"]
    assert [row.user_id for row in notifications(container.config)] == [8]
    assert len(smtp_server.messages()) == 1
    assert not container._died.ready()


def test_event_for_a_user_not_known_yet_is_retried_until_the_user_is(notification, smtp_server,
                                                                     plain):
    smtp_server.start()
    notification(EVENT_RETRY_DELAYS=[1, 2, 4, 8, 16])

    # the enrollment overtakes the registration (no auth service answers either)
    publish(plain, "course.enrolled", {"enrollment_id": 1, "user_id": 9, "course_id": 3,
                                       "course_title": "Distributed Systems"})
    eventlet_sleep(1)
    publish(plain, "user.registered", {"user_id": 9, "email": "leslie@example.com",
                                       "name": "Leslie Lamport"})

    wait_until(lambda: len(mails_to(smtp_server, "leslie@example.com")) == 2, timeout=60,
               interval=0.2, message="welcome and enrollment mails received")
    subjects = sorted(mail["subject"] for mail in mails_to(smtp_server, "leslie@example.com"))
    assert any("Distributed Systems" in subject for subject in subjects)
    assert plain.message_count("notification.confirm_enrollment.dlq") == 0


class FakeAuth:
    """Stands in for the auth service: one user registered before notifications existed."""
    name = "auth"

    @rpc
    def get_user(self, user_id):
        if user_id == 42:
            return {"id": 42, "email": "early@example.com", "name": "Early Bird",
                    "role": "student", "created_at": "2026-01-01T00:00:00+00:00"}
        raise NotFound(f"user {user_id} does not exist")


def test_user_no_event_told_about_is_asked_of_auth(container_factory, notification,
                                                   smtp_server, plain, rabbit_config):
    smtp_server.start()
    container_factory(FakeAuth, rabbit_config).start()
    notification()

    publish(plain, "course.enrolled", {"enrollment_id": 2, "user_id": 42, "course_id": 3,
                                       "course_title": "Databases"})

    mails = smtp_server.wait_for(1)
    assert mails[0]["to"] == "early@example.com"
    assert "Early Bird" in mails[0]["body"] and "Databases" in mails[0]["subject"]


def test_log_backend_writes_one_line_per_mail(notification, plain, caplog):
    caplog.set_level("INFO", logger="services.notification.mail")
    container = notification(MAIL_BACKEND="log")

    publish(plain, "user.registered", {"user_id": 11, "email": "logged@example.com",
                                       "name": "Logged User"})

    wait_until(lambda: [record for record in caplog.records
                        if "logged@example.com" in record.getMessage()], timeout=30,
               message="mail logged")
    lines = [record.getMessage() for record in caplog.records
             if record.name == "services.notification.mail"]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "Welcome" in lines[0] and "Logged User" in lines[0]
    wait_until(lambda: notifications(container.config)[0].status == "sent", timeout=15,
               message="marked sent")


def eventlet_sleep(seconds):
    import eventlet
    eventlet.sleep(seconds)
