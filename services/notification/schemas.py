"""What the notification service reads (event data, RPC arguments) and returns (notifications)."""

import marshmallow
from marshmallow import Schema, fields, validate

from services.kit.schemas import PageArgs, UtcDateTime
from services.notification.models import KINDS, STATUSES


class NotificationSchema(Schema):
    id = fields.Integer()
    user_id = fields.Integer()
    kind = fields.String(validate=validate.OneOf(KINDS))
    subject = fields.String()
    body = fields.String()
    status = fields.String(validate=validate.OneOf(STATUSES))
    event_id = fields.String()
    created_at = UtcDateTime()
    sent_at = UtcDateTime(allow_none=True)


class ListNotificationsArgs(PageArgs):
    user_id = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))


# Event data: a producer may add fields (DESIGN.md), so unknown ones are ignored, not refused.

class EventData(Schema):
    class Meta:
        unknown = marshmallow.EXCLUDE


class UserRegisteredData(EventData):
    user_id = fields.Integer(required=True, strict=True)
    email = fields.Email(required=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))


class CourseCreatedData(EventData):
    course_id = fields.Integer(required=True, strict=True)
    title = fields.String(required=True, validate=validate.Length(min=1, max=300))
    instructor_id = fields.Integer(required=True, strict=True)


class CourseEnrolledData(EventData):
    enrollment_id = fields.Integer(load_default=None, strict=True)
    user_id = fields.Integer(required=True, strict=True)
    course_id = fields.Integer(required=True, strict=True)
    course_title = fields.String(required=True, validate=validate.Length(min=1, max=300))


class ReviewCreatedData(EventData):
    review_id = fields.Integer(load_default=None, strict=True)
    user_id = fields.Integer(required=True, strict=True)
    course_id = fields.Integer(required=True, strict=True)
    rating = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=5))
    has_comment = fields.Boolean(load_default=False)
