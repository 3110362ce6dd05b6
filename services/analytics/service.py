"""analytics: every event, once, in an append-only log, with aggregates kept beside it.

    knowledge_nest_events --#--> [analytics.record_event] --> event_log rows + aggregates
                                                              (one transaction with the inbox
                                                               records, per batch of events)

The RPC contract is docs/rpc.md; the rules are in commands.py. ``knowledge-nest replay`` reads
this service's log to publish events again (services/analytics/replay.py).
"""
from services.analytics import commands
from services.analytics.delivery import RoutingKeys, record_events_handler
from services.analytics.models import Base
from services.kit import Database
from services.kit.db import check_database
from services.kit.errors import EXPECTED_ERRORS, ServiceUnavailable
from services.kit.rpc import rpc


class AnalyticsService:
    name = "analytics"

    db = Database(Base)
    routing_keys = RoutingKeys()

    # every event: queue "analytics.record_event". In batches: per event, every transaction
    # would write the same aggregate rows (this minute's, this type's), one after another.
    @record_events_handler("#")
    def record_event(self, events):
        commands.record_all(self.db.session, events, self.routing_keys)

    @rpc(expected_exceptions=EXPECTED_ERRORS, read_only=True)
    def list_events(self, event_type=None, since=None, until=None, user_id=None, course_id=None,
                    page=1, per_page=20, after=None):
        return commands.list_events(self.db.session, event_type, since, until, user_id,
                                    course_id, page, per_page, after)

    @rpc(expected_exceptions=EXPECTED_ERRORS, read_only=True)
    def summary(self):
        return commands.summary(self.db.session)

    @rpc(expected_exceptions=EXPECTED_ERRORS + (ServiceUnavailable,), read_only=True)
    def health(self):
        return check_database(self.db.session, self.name)
