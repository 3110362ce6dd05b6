"""From an event to a pending notification, in the handler's transaction.

Nothing here sends mail or commits: the kit commits the handler's session together with the
event's inbox record, and the mail sender (``sender.py``) delivers what is pending afterwards.

Who to write to comes from earlier events (``user.registered``, ``course.created``), remembered
in ``contacts`` and ``courses``. For someone or something no event told us about, the
``Directory`` asks the owning service over RPC (``auth.get_user``, ``course.get_course``); if that
does not answer either, ``RecipientUnknown`` is raised and the kit retries the event later
(``EVENT_RETRY_DELAYS``), then parks it in the queue's DLQ: never dropped silently.
"""
import logging

from sqlalchemy import select

from contracts import COURSE_CREATED, COURSE_ENROLLED, REVIEW_CREATED, USER_REGISTERED
from contracts import InvalidEventData  # noqa: F401 (what an unusable event raises, for callers)
from services.kit.errors import NotFound
from services.notification.models import (
    COURSE_LIVE, ENROLLMENT_CONFIRMED, NEW_REVIEW, PENDING, WELCOME, Contact, Course,
    Notification,
)

log = logging.getLogger(__name__)

SIGNATURE = "\n\nThe KnowledgeNest team"


class RecipientUnknown(Exception):
    """The user or course a notice needs is not known yet: the kit retries the event."""


class Directory:
    """Addresses of users and courses: remembered from events, else asked over RPC."""

    def __init__(self, session, auth=None, course=None):
        self.session = session
        self.auth = auth
        self.course = course

    def remember_user(self, user_id, email, name):
        return self.session.merge(Contact(user_id=user_id, email=email, name=name))

    def remember_course(self, course_id, title, instructor_id):
        return self.session.merge(Course(course_id=course_id, title=title,
                                         instructor_id=instructor_id))

    def known_users(self, user_ids):
        """Read the contacts of ``user_ids`` in one query: ``user()`` then finds them in the
        session, without a query each."""
        if user_ids:
            # kept: the session's identity map holds unchanged rows only weakly
            self._known = self.session.execute(
                select(Contact).where(Contact.user_id.in_(sorted(user_ids)))).scalars().all()

    def user(self, user_id):
        contact = self.session.get(Contact, user_id)
        if contact is not None:
            return contact
        user = self._ask(self.auth, "get_user", "user", user_id)
        return self.remember_user(user_id, user["email"], user["name"])

    def course_info(self, course_id):
        course = self.session.get(Course, course_id)
        if course is not None:
            return course
        found = self._ask(self.course, "get_course", "course", course_id)
        return self.remember_course(course_id, found["title"], found["instructor_id"])

    def _ask(self, service, method, what, key):
        if service is None:
            raise RecipientUnknown(f"{what} {key} is not known yet (no event about it seen)")
        try:
            return getattr(service, method)(key)
        except NotFound:
            raise RecipientUnknown(f"{what} {key} is not known yet (no event about it seen, "
                                   f"and {method} says it does not exist)") from None
        except Exception as exc:  # service not running, timed out, ...
            raise RecipientUnknown(f"{what} {key} is not known yet (no event about it seen, "
                                   f"and {method} did not answer: {type(exc).__name__}: {exc})") \
                from None


def stored_notifications(session, events, kind):
    """{event_id: notification} of the ``kind`` notifications ``events`` already produced."""
    return {notification.event_id: notification for notification in session.execute(
        select(Notification).where(Notification.event_id.in_([event.event_id for event in events]),
                                   Notification.kind == kind)).scalars()}


def store(session, event, kind, contact, subject, body, stored=None):
    """Add the pending notification, unless this event already produced one of this kind.

    ``stored``: what stored_notifications() found for a batch of events, this one among them.
    """
    if stored is None:
        stored = stored_notifications(session, [event], kind)
    existing = stored.get(event.event_id)
    if existing is not None:
        log.info("event %s already has its %s notification (%s)", event.event_id, kind,
                 existing.id)
        return existing
    notification = Notification(user_id=contact.user_id, email=contact.email, kind=kind,
                                subject=subject, body=body, event_id=event.event_id,
                                status=PENDING, attempts=0)
    session.add(notification)
    return notification


def welcome(directory, event):
    data = USER_REGISTERED.read(event.data)
    contact = directory.remember_user(data["user_id"], data["email"], data["name"])
    body = (f"Hi {contact.name},\n\n"
            f"Welcome to KnowledgeNest! Your account ({contact.email}) is ready: browse the "
            f"courses, enroll in the ones that interest you and review them once you have "
            f"learnt something." + SIGNATURE)
    return store(directory.session, event, WELCOME, contact,
                 f"Welcome to KnowledgeNest, {contact.name}!", body)


def course_live(directory, event):
    data = COURSE_CREATED.read(event.data)
    course = directory.remember_course(data["course_id"], data["title"], data["instructor_id"])
    instructor = directory.user(course.instructor_id)
    body = (f"Hi {instructor.name},\n\n"
            f"Your course \"{course.title}\" is live on KnowledgeNest: students can find it "
            f"and enroll in it now." + SIGNATURE)
    return store(directory.session, event, COURSE_LIVE, instructor,
                 f"Your course \"{course.title}\" is live", body)


def enrollment_confirmed(directory, event, data, stored):
    """``data``: the event's, read; ``stored``: what stored_notifications() found."""
    student = directory.user(data["user_id"])
    title = data["course_title"]
    body = (f"Hi {student.name},\n\n"
            f"You are enrolled in \"{title}\". Happy learning! Once you have followed it, "
            f"tell others what you thought with a review." + SIGNATURE)
    return store(directory.session, event, ENROLLMENT_CONFIRMED, student,
                 f"You are enrolled in \"{title}\"", body, stored)


def enrollments_confirmed(directory, events):
    """enrollment_confirmed() for each of ``events`` (a batch), with one query for their
    students and one for the notifications they already produced (not two per event)."""
    data = [COURSE_ENROLLED.read(event.data) for event in events]
    directory.known_users({item["user_id"] for item in data})
    stored = stored_notifications(directory.session, events, ENROLLMENT_CONFIRMED)
    return [enrollment_confirmed(directory, event, item, stored)
            for event, item in zip(events, data)]


def new_review(directory, event):
    data = REVIEW_CREATED.read(event.data)
    course = directory.course_info(data["course_id"])
    instructor = directory.user(course.instructor_id)
    comment = "with a comment" if data["has_comment"] else "without a comment"
    body = (f"Hi {instructor.name},\n\n"
            f"Your course \"{course.title}\" has a new review: {data['rating']} out of 5 stars, "
            f"{comment}." + SIGNATURE)
    return store(directory.session, event, NEW_REVIEW, instructor,
                 f"New review of your course \"{course.title}\"", body)
