"""course: courses, enrollments, rating aggregates. The RPC contract is docs/rpc.md; the rules
are in commands.py."""
from services.course import commands
from services.course.models import Base
from services.kit import Database, EventDispatcher, event_handler
from services.kit.db import check_database
from services.kit.errors import EXPECTED_ERRORS, ServiceUnavailable
from services.kit.rpc import TimedRpcProxy, rpc


class CourseService:
    name = "course"

    db = Database(Base)
    dispatch = EventDispatcher()
    auth = TimedRpcProxy("auth")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def create_course(self, instructor_id, title, description):
        args = commands.validate_new_course(instructor_id, title, description)
        # Ask auth before touching the session (SQLite: one connection per process).
        instructor = self.auth.get_user(args["instructor_id"])  # NotFound propagates
        return commands.create_course(self.db.session, self.dispatch, args, instructor)

    @rpc(expected_exceptions=EXPECTED_ERRORS, read_only=True)
    def list_courses(self, page=1, per_page=20, after=None):
        return commands.list_courses(self.db.session, page, per_page, after)

    @rpc(expected_exceptions=EXPECTED_ERRORS, read_only=True)
    def get_course(self, course_id):
        return commands.get_course(self.db.session, course_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def enroll(self, user_id, course_id):
        return commands.enroll(self.db.session, self.dispatch, user_id, course_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS, read_only=True)
    def list_enrollments(self, user_id, page=1, per_page=20, after=None):
        return commands.list_enrollments(self.db.session, user_id, page, per_page, after)

    @rpc(expected_exceptions=EXPECTED_ERRORS, read_only=True)
    def is_enrolled(self, user_id, course_id):
        return commands.is_enrolled(self.db.session, user_id, course_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS + (ServiceUnavailable,), read_only=True)
    def health(self):
        return check_database(self.db.session, self.name)

    @event_handler("review.created")
    def update_rating(self, event):
        """One more rating on the course; the kit commits it with the inbox record."""
        commands.record_rating(self.db.session, event.data)
