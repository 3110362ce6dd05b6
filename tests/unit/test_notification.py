"""notification's rules, through its entrypoints with nameko's worker_factory (no broker).

The database is a real in-memory SQLite session; the auth and course RPC proxies, the mail sender
and smtplib are mocks.
"""
import contextlib
import logging
import smtplib
from datetime import timedelta
from types import SimpleNamespace
from unittest import mock

import pytest
from sqlalchemy.exc import OperationalError
from nameko.exceptions import UnknownService
from nameko.testing.services import worker_factory
from sqlalchemy import create_engine, select, update
from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.orm import Session
from sqlalchemy.pool import StaticPool

from services.kit.db import utcnow
from services.kit.envelope import new_event
from services.kit.errors import NotFound, ServiceUnavailable, ValidationError
from services.notification.mail import (
    LogMailBackend, MailError, SmtpMailBackend, backend_from_config, mail_error,
)
from services.notification.models import Base, Contact, Course, Notification
from services.notification.notices import InvalidEventData, RecipientUnknown
from services.notification.sender import MailSender, retry_delay
from services.notification.service import NotificationService


@pytest.fixture
def engine():
    engine = create_engine("sqlite://", poolclass=StaticPool,
                           connect_args={"check_same_thread": False})
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine):
    with Session(engine) as session:
        yield session


@pytest.fixture
def service(session):
    service = worker_factory(NotificationService, db=SimpleNamespace(session=session))
    service.auth.get_user.side_effect = UnknownService("auth")
    service.course.get_course.side_effect = UnknownService("course")
    return service


def registered(user_id, email, name):
    return new_event("user.registered", {"user_id": user_id, "email": email, "name": name},
                     source="auth")


def stored(session):
    session.flush()
    return session.execute(select(Notification).order_by(Notification.id)).scalars().all()


def test_registration_stores_a_pending_welcome_and_remembers_the_user(service, session):
    event = registered(1, "grace@example.com", "Grace Hopper")
    service.send_welcome(event)

    [notification] = stored(session)
    assert notification.kind == "welcome" and notification.status == "pending"
    assert notification.user_id == 1 and notification.email == "grace@example.com"
    assert notification.event_id == event.event_id and notification.attempts == 0
    assert "Grace Hopper" in notification.subject and "Grace Hopper" in notification.body
    assert session.get(Contact, 1).email == "grace@example.com"


def test_course_created_tells_its_instructor_it_is_live(service, session):
    service.send_welcome(registered(1, "grace@example.com", "Grace"))
    service.announce_course(new_event("course.created", {"course_id": 10, "title": "Compilers",
                                                         "instructor_id": 1}, source="course"))

    notification = stored(session)[-1]
    assert notification.kind == "course_live" and notification.email == "grace@example.com"
    assert "Compilers" in notification.subject and "Compilers" in notification.body
    assert session.get(Course, 10).instructor_id == 1
    service.auth.get_user.assert_not_called()


def test_enrollment_is_confirmed_to_the_student_naming_the_course(service, session):
    service.send_welcome(registered(2, "alan@example.com", "Alan"))
    service.confirm_enrollment([new_event("course.enrolled", {
        "enrollment_id": 5, "user_id": 2, "course_id": 10, "course_title": "Compilers"},
        source="course")])

    notification = stored(session)[-1]
    assert notification.kind == "enrollment_confirmed"
    assert notification.email == "alan@example.com" and notification.user_id == 2
    assert "Compilers" in notification.subject and "Alan" in notification.body


def enrolled(user_id, enrollment_id):
    return new_event("course.enrolled", {"enrollment_id": enrollment_id, "user_id": user_id,
                                         "course_id": 10, "course_title": "Compilers"},
                     source="course")


def test_a_batch_of_enrollments_reads_its_students_once_and_stores_each_once(service, session):
    service.send_welcome(registered(2, "alan@example.com", "Alan"))
    service.send_welcome(registered(3, "ada@example.com", "Ada"))
    session.commit()
    session.expunge_all()  # the contacts are read from the database, not the session
    batch = [enrolled(2, 1), enrolled(3, 2), enrolled(2, 3)]
    statements = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    sqlalchemy_event.listen(session.get_bind(), "before_cursor_execute", listener)
    try:
        service.confirm_enrollment(batch)
        session.flush()
    finally:
        sqlalchemy_event.remove(session.get_bind(), "before_cursor_execute", listener)
    assert sum("FROM contacts" in sql for sql in statements) == 1
    assert sum("FROM notifications" in sql for sql in statements) == 1
    service.confirm_enrollment(batch)  # again (one by one after a failed batch, say): no more
    notifications = [n for n in stored(session) if n.kind == "enrollment_confirmed"]
    assert sorted((n.event_id, n.email) for n in notifications) == sorted(
        (event.event_id, email) for event, email in zip(
            batch, ["alan@example.com", "ada@example.com", "alan@example.com"]))
    service.auth.get_user.assert_not_called()


def test_review_is_announced_to_the_course_instructor_not_the_reviewer(service, session):
    service.send_welcome(registered(1, "grace@example.com", "Grace"))
    service.send_welcome(registered(2, "alan@example.com", "Alan"))
    service.announce_course(new_event("course.created", {"course_id": 10, "title": "Compilers",
                                                         "instructor_id": 1}, source="course"))
    service.notify_instructor_of_review(new_event("review.created", {
        "review_id": 3, "user_id": 2, "course_id": 10, "rating": 2, "has_comment": False},
        source="review"))

    notification = stored(session)[-1]
    assert notification.kind == "new_review" and notification.email == "grace@example.com"
    assert "Compilers" in notification.subject
    assert "2 out of 5" in notification.body and "without a comment" in notification.body


def test_unknown_user_raises_so_the_kit_retries(service, session):
    event = new_event("course.enrolled", {"enrollment_id": 5, "user_id": 99, "course_id": 10,
                                          "course_title": "Compilers"}, source="course")
    with pytest.raises(RecipientUnknown, match="user 99"):
        service.confirm_enrollment([event])
    service.auth.get_user.side_effect = NotFound("no user 99")
    with pytest.raises(RecipientUnknown, match="does not exist"):
        service.confirm_enrollment([event])
    assert stored(session) == []


def test_user_unknown_to_events_is_asked_of_auth_and_remembered(service, session):
    service.auth.get_user.side_effect = None
    service.auth.get_user.return_value = {"id": 42, "email": "early@example.com",
                                          "name": "Early", "role": "student"}
    service.confirm_enrollment([new_event("course.enrolled", {
        "enrollment_id": 5, "user_id": 42, "course_id": 10, "course_title": "Compilers"},
        source="course")])

    service.auth.get_user.assert_called_once_with(42)
    assert stored(session)[-1].email == "early@example.com"
    assert session.get(Contact, 42).name == "Early"


def test_review_of_a_course_never_announced_is_asked_of_course(service, session):
    service.send_welcome(registered(1, "grace@example.com", "Grace"))
    review = new_event("review.created", {"review_id": 3, "user_id": 2, "course_id": 11,
                                          "rating": 5, "has_comment": True}, source="review")
    with pytest.raises(RecipientUnknown, match="course 11"):
        service.notify_instructor_of_review(review)

    service.course.get_course.side_effect = None
    service.course.get_course.return_value = {"id": 11, "title": "Old Course",
                                              "instructor_id": 1}
    service.notify_instructor_of_review(review)
    assert stored(session)[-1].email == "grace@example.com"
    assert "Old Course" in stored(session)[-1].subject


@pytest.mark.parametrize("data", [
    {"user_id": 1, "name": "No Email"},
    {"user_id": 1, "email": "not-an-email", "name": "X"},
    {"user_id": "1", "email": "a@example.com", "name": "X"},
])
def test_event_data_missing_what_a_notice_needs_is_refused(service, session, data):
    with pytest.raises(InvalidEventData):
        service.send_welcome(new_event("user.registered", data, source="auth"))
    assert stored(session) == []


def test_a_field_added_by_a_newer_producer_is_ignored(service, session):
    service.send_welcome(new_event("user.registered", {"user_id": 1, "email": "a@example.com",
                                                       "name": "A", "role": "student"},
                                   source="auth"))
    assert len(stored(session)) == 1


def test_the_same_event_twice_stores_one_notification(service, session):
    event = registered(1, "grace@example.com", "Grace")
    service.send_welcome(event)
    service.send_welcome(event)
    assert len(stored(session)) == 1


def test_list_notifications_is_newest_first_and_paginated(service, session):
    for user_id in (1, 2):
        service.send_welcome(registered(user_id, f"u{user_id}@example.com", f"U{user_id}"))
    for course_id in (10, 11, 12):
        service.announce_course(new_event("course.created", {
            "course_id": course_id, "title": f"Course {course_id}", "instructor_id": 1},
            source="course"))
    session.commit()

    page = service.list_notifications(1, page=1, per_page=3)
    assert page["total"] == 4 and page["page"] == 1 and page["per_page"] == 3
    assert [item["subject"] for item in page["items"]] == [
        'Your course "Course 12" is live', 'Your course "Course 11" is live',
        'Your course "Course 10" is live']
    assert page["items"][0]["created_at"].endswith("+00:00")
    assert page["items"][0]["sent_at"] is None and page["items"][0]["status"] == "pending"
    assert [item["kind"] for item in service.list_notifications(1, page=2, per_page=3)["items"]
            ] == ["welcome"]
    after = service.list_notifications(1, per_page=3, after=page["next"])
    assert [item["kind"] for item in after["items"]] == ["welcome"] and after["next"] is None
    assert service.list_notifications(3)["items"] == []


@pytest.mark.parametrize("args, field", [
    (("1",), "user_id"), ((0,), "user_id"), ((1, 0), "page"), ((1, 1, 101), "per_page"),
    ((1, 1, 20, "not a cursor"), "after"), ((1, 2, 20, "WzVd"), "after"),
])
def test_list_notifications_refuses_bad_arguments(service, args, field):
    with pytest.raises(ValidationError) as error:
        service.list_notifications(*args)
    assert field in error.value.fields


def test_health(service, session):
    assert service.health() == {"service": "notification", "database": "ok"}
    refused = OperationalError("SELECT 1", {}, OSError("connection refused"))
    service.db = SimpleNamespace(session=mock.Mock(execute=mock.Mock(side_effect=refused)))
    with pytest.raises(ServiceUnavailable):
        service.health()


# the mail sender ------------------------------------------------------------------------------

class FakeBackend:
    def __init__(self, failures=()):
        self.failures = list(failures)
        self.sent = []
        self.sessions = 0

    @contextlib.contextmanager
    def session(self):
        self.sessions += 1
        yield self

    def send(self, to, subject, body):
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append((to, subject, body))


def make_sender(engine, backend, max_attempts=3):
    sender = MailSender()
    sender.database = SimpleNamespace(engine=engine)
    sender.backend = backend
    sender.retry_interval = 10.0
    sender.max_attempts = max_attempts
    sender.max_retry_delay = 60.0
    sender.lease = 300.0
    return sender


def add_pending(session, event_id="e1", email="a@example.com"):
    session.add(Notification(user_id=1, email=email, kind="welcome", subject="Hello",
                             body="Hi A", event_id=event_id, status="pending", attempts=0))
    session.commit()


def row(engine):
    with Session(engine) as session:
        return session.execute(select(Notification)).scalar_one()


def make_due(engine):
    with Session(engine) as session:
        session.execute(update(Notification).values(next_attempt_at=utcnow() - timedelta(1)))
        session.commit()


def test_sender_sends_each_batch_in_one_mail_session(engine, session):
    from services.notification.sender import BATCH_SIZE
    for n in range(BATCH_SIZE + 5):
        add_pending(session, event_id=f"e{n}", email=f"u{n}@example.com")
    backend = FakeBackend()
    assert make_sender(engine, backend).deliver_due() == BATCH_SIZE + 5
    assert backend.sessions == 2  # two batches: two connections, not one per mail
    assert len(backend.sent) == BATCH_SIZE + 5


def test_sender_claims_row_by_row_without_update_returning(engine, session, monkeypatch):
    from services.notification.sender import BATCH_SIZE
    monkeypatch.setattr(engine.dialect, "update_returning", False)  # SQLite before 3.35
    for n in range(BATCH_SIZE + 5):
        add_pending(session, event_id=f"e{n}", email=f"u{n}@example.com")
    backend = FakeBackend()
    assert make_sender(engine, backend).deliver_due() == BATCH_SIZE + 5
    assert sorted(to for to, _, _ in backend.sent) == sorted(
        f"u{n}@example.com" for n in range(BATCH_SIZE + 5))
    with Session(engine) as check:
        assert {r.status for r in check.execute(select(Notification)).scalars()} == {"sent"}


def test_sender_sends_pending_mail_once_and_marks_it_sent(engine, session):
    add_pending(session)
    backend = FakeBackend()
    sender = make_sender(engine, backend)

    assert sender.deliver_due() == 1
    assert sender.deliver_due() == 0
    assert backend.sent == [("a@example.com", "Hello", "Hi A")]
    sent = row(engine)
    assert sent.status == "sent" and sent.sent_at is not None and sent.attempts == 1


def test_failed_send_stays_pending_with_growing_back_off_then_fails(engine, session):
    add_pending(session)
    backend = FakeBackend([MailError("451 later")] * 3)
    sender = make_sender(engine, backend, max_attempts=3)

    assert sender.deliver_due() == 0
    first = row(engine)
    assert first.status == "pending" and first.attempts == 1 and "451" in first.last_error
    assert sender.deliver_due() == 0  # not due yet: nothing tried
    assert row(engine).attempts == 1

    make_due(engine)
    sender.deliver_due()
    assert row(engine).status == "pending" and row(engine).attempts == 2
    make_due(engine)
    sender.deliver_due()
    assert row(engine).status == "failed" and row(engine).attempts == 3
    make_due(engine)
    assert sender.deliver_due() == 0 and backend.sent == []


def test_permanent_refusal_fails_at_once(engine, session):
    add_pending(session)
    sender = make_sender(engine, FakeBackend([MailError("550 no such user", permanent=True)]))
    sender.deliver_due()
    assert row(engine).status == "failed" and row(engine).attempts == 1


def test_a_batch_is_claimed_together_and_one_failed_send_spares_the_others(engine, session):
    from services.notification import sender as sender_module
    for n in range(sender_module.BATCH_SIZE + 5):  # more than one batch
        add_pending(session, event_id=f"e{n}", email=f"u{n}@example.com")
    backend = FakeBackend([MailError("451 later")])  # the first send of the first batch fails
    mail_sender = make_sender(engine, backend)

    assert mail_sender.deliver_due() == sender_module.BATCH_SIZE + 4
    with Session(engine) as check:
        rows = {r.email: r for r in check.execute(select(Notification)).scalars()}
    assert rows["u0@example.com"].status == "pending" and rows["u0@example.com"].attempts == 1
    others = [r for email, r in rows.items() if email != "u0@example.com"]
    assert all(r.status == "sent" and r.attempts == 1 and r.sent_at for r in others)
    assert sorted(to for to, _, _ in backend.sent) == sorted(
        f"u{n}@example.com" for n in range(1, sender_module.BATCH_SIZE + 5))


def test_retry_delay_doubles_up_to_its_maximum():
    assert [retry_delay(n, 5, 60) for n in (1, 2, 3, 4, 5, 6)] == [5, 10, 20, 40, 60, 60]


# mail backends --------------------------------------------------------------------------------

def test_backend_from_config():
    assert isinstance(backend_from_config({}), LogMailBackend)
    smtp = backend_from_config({"MAIL_BACKEND": "smtp", "SMTP_HOST": "mail.example.com",
                                "SMTP_PORT": "587", "SMTP_USER": None, "SMTP_STARTTLS": "true",
                                "MAIL_FROM": "KN <kn@example.com>"})
    assert isinstance(smtp, SmtpMailBackend)
    assert (smtp.host, smtp.port, smtp.user, smtp.starttls, smtp.mail_from) == (
        "mail.example.com", 587, "", True, "KN <kn@example.com>")
    with pytest.raises(ValueError, match="MAIL_BACKEND"):
        backend_from_config({"MAIL_BACKEND": "carrier-pigeon"})


def test_log_backend_writes_one_readable_line(caplog):
    caplog.set_level(logging.INFO, logger="services.notification.mail")
    LogMailBackend().send("a@example.com", "Hello", "Hi A,\n\nWelcome.")
    [record] = caplog.records
    assert "a@example.com" in record.getMessage() and "Hello" in record.getMessage()
    assert "\n" not in record.getMessage()


@pytest.mark.parametrize("error, permanent", [
    (smtplib.SMTPDataError(451, b"try again later"), False),
    (smtplib.SMTPDataError(554, b"rejected"), True),
    (smtplib.SMTPRecipientsRefused({"a@example.com": (550, b"no such user")}), True),
    (smtplib.SMTPRecipientsRefused({"a@example.com": (450, b"mailbox busy")}), False),
    (ConnectionRefusedError(111, "Connection refused"), False),
    (smtplib.SMTPServerDisconnected("gone"), False),
])
def test_smtp_failures_become_mail_errors(error, permanent):
    assert mail_error(error, "mail.example.com", 25).permanent is permanent
