"""RPC inputs (validated, raising services.kit.errors.ValidationError) and outputs of analytics."""
from datetime import timezone

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from services.kit.schemas import PageArgs, UtcDateTime


class IsoDateTime(fields.DateTime):
    """An ISO 8601 string; one without an offset is taken as UTC. Loads as an aware UTC datetime."""

    def __init__(self, **kwargs):
        super().__init__(format="iso", **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE)
        parsed = super()._deserialize(value.strip().replace("Z", "+00:00"), attr, data, **kwargs)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=timezone.utc)
        try:
            return parsed.astimezone(timezone.utc)
        except OverflowError:  # 0001-01-01T00:00:00+01:00 is before the first representable UTC
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE) from None


def optional_id():
    return fields.Integer(load_default=None, allow_none=True, strict=True,
                          validate=validate.Range(min=1, max=2**63 - 1))


class ListEventsArgs(PageArgs):
    event_type = fields.String(load_default=None, allow_none=True,
                               validate=validate.Length(min=1, max=255))
    since = IsoDateTime(load_default=None, allow_none=True)
    until = IsoDateTime(load_default=None, allow_none=True)
    user_id = optional_id()
    course_id = optional_id()

    @validates_schema
    def since_before_until(self, data, **kwargs):
        if data.get("since") and data.get("until") and data["since"] > data["until"]:
            raise ValidationError("must not be before since", "until")


class EventLogSchema(Schema):
    id = fields.Integer()
    event_id = fields.String()
    event_type = fields.String()
    routing_key = fields.String()
    source = fields.String(allow_none=True)
    version = fields.Integer()
    timestamp = UtcDateTime()
    received_at = UtcDateTime()
    data = fields.Raw()
