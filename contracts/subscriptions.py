"""The routing contract: every consumer queue of the application and the event types it binds.

One line per ``@event_handler`` of the services (its queue is ``<service>.<method>``). The kit
declares every queue listed here when any service starts, so an event published before its
consumer first ran waits in that consumer's queue (tests/unit/test_contracts.py fails when a
handler is missing here, or listed with other keys than its decorator's).

    knowledge_nest_events (topic) --user.registered--> [notification.send_welcome]
                                  --review.created---> [course.update_rating]
                                  ...

It also names the exchanges nameko's shell publishes to as the event owners
(``n.dispatch_event("auth", type, body)`` goes to ``auth.events``): config's
``SHELL_EVENT_EXCHANGES`` points the kit at them, and it binds each to knowledge_nest_events.
"""
from contracts.events import OWNERS

SUBSCRIPTIONS = {
    "course.update_rating": ("review.created",),
    "notification.send_welcome": ("user.registered",),
    "notification.announce_course": ("course.created",),
    "notification.confirm_enrollment": ("course.enrolled",),
    "notification.notify_instructor_of_review": ("review.created",),
    "analytics.record_event": ("#",),
}

SHELL_EVENT_EXCHANGES = tuple(f"{owner}.events" for owner in sorted(set(OWNERS.values())))
