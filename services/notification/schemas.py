"""What the notification service reads (RPC arguments) and returns (notifications); the events' data
is read through their contracts (contracts/events.py)."""

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
