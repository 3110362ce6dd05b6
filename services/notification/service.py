"""The notification service: every event becomes a notification, delivered by mail.

    user.registered  --> notification.send_welcome                --> welcome mail to the new user
    course.created   --> notification.announce_course             --> "your course is live"
    course.enrolled  --> notification.confirm_enrollment          --> enrollment confirmation
    review.created   --> notification.notify_instructor_of_review --> new-review notice

Each handler only stores the notification as ``pending`` (committed by the kit with the event's
inbox record); ``MailSender`` delivers it after the commit and retries failed sends later.
"""
from sqlalchemy import select

from services.kit import Database, batch_event_handler, event_handler
from services.kit.db import check_database
from services.kit.rpc import TimedRpcProxy, rpc
from services.kit.schemas import dumper, page_of
from services.notification import notices
from services.notification.models import Base, Notification
from services.notification.schemas import ListNotificationsArgs, NotificationSchema
from services.notification.sender import MailSender


class NotificationService:
    name = "notification"

    db = Database(Base)
    mail = MailSender()
    auth = TimedRpcProxy("auth")      # for a user no user.registered told us about
    course = TimedRpcProxy("course")  # for a course no course.created told us about

    def _directory(self):
        return notices.Directory(self.db.session, auth=self.auth, course=self.course)

    @event_handler("user.registered")
    def send_welcome(self, event):
        notices.welcome(self._directory(), event)

    @event_handler("course.created")
    def announce_course(self, event):
        notices.course_live(self._directory(), event)

    # the busiest of the four: in batches, one transaction (and one WAL flush) for many
    @batch_event_handler("course.enrolled")
    def confirm_enrollment(self, events):
        notices.enrollments_confirmed(self._directory(), events)

    @event_handler("review.created")
    def notify_instructor_of_review(self, event):
        notices.new_review(self._directory(), event)

    @rpc(read_only=True)
    def list_notifications(self, user_id, page=1, per_page=20, after=None):
        args = ListNotificationsArgs.shared().load_or_raise(
            {"user_id": user_id, "page": page, "per_page": per_page, "after": after})
        query = select(Notification).where(Notification.user_id == args["user_id"])
        return page_of(self.db.session, query, (Notification.id,), args["page"],
                       args["per_page"], dumper(NotificationSchema), after=args["after"])

    @rpc(read_only=True)
    def health(self):
        return check_database(self.db.session, self.name)
