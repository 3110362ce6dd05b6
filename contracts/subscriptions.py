"""The routing contract: every consumer queue of the application and the event types it binds.

One line per ``@event_handler`` of the services (its queue is ``<service>.<method>``). The kit
declares every queue listed here when any service starts, so an event published before its
consumer first ran waits in that consumer's queue (tests/unit/test_contracts.py fails when a
handler is missing here, or listed with other keys than its decorator's).

    knowledge_nest_events (topic) --user.registered--> [notification.send_welcome]
                                  --review.created---> [course.update_rating]
                                  ...
"""
SUBSCRIPTIONS = {
    "course.update_rating": ("review.created",),
    "notification.send_welcome": ("user.registered",),
    "notification.announce_course": ("course.created",),
    "notification.confirm_enrollment": ("course.enrolled",),
    "notification.notify_instructor_of_review": ("review.created",),
    "analytics.record_event": ("#",),
}
