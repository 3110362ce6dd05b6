"""review: course reviews. The RPC contract is docs/rpc.md; the rules are in commands.py."""
from services.kit import Database, EventDispatcher
from services.kit.db import check_database
from services.kit.errors import EXPECTED_ERRORS, ServiceUnavailable
from services.kit.rpc import TimedRpcProxy, rpc
from services.review import commands
from services.review.models import Base


class ReviewService:
    name = "review"

    db = Database(Base)
    dispatch = EventDispatcher()
    course = TimedRpcProxy("course")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def create_review(self, user_id, course_id, rating, comment=None):
        args = commands.validate_new_review(user_id, course_id, rating, comment)
        # RPC calls before touching the session (SQLite: one connection per process).
        commands.check_may_review(self.course, args)
        return commands.create_review(self.db.session, self.dispatch, args)

    @rpc(expected_exceptions=EXPECTED_ERRORS, read_only=True)
    def list_reviews(self, course_id, page=1, per_page=20, after=None):
        return commands.list_reviews(self.db.session, course_id, page, per_page, after)

    @rpc(expected_exceptions=EXPECTED_ERRORS + (ServiceUnavailable,), read_only=True)
    def health(self):
        return check_database(self.db.session, self.name)
