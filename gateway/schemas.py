"""What the gateway accepts (request bodies, query strings) and sends (response bodies).

Request schemas refuse unknown fields and wrong types (``StrictSchema``); the services validate
again (the password policy, for one, is the auth service's). Response schemas are what the
gateway dumps the services' answers through, so that nothing leaves that is not documented in
the OpenAPI document generated from these same classes (``gateway/openapi.py``).
"""
import re
from datetime import timezone

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from services.kit.errors import ValidationError as InvalidInput
from services.kit.schemas import (
    DEFAULT_PER_PAGE, MAX_COUNT, MAX_CURSOR_LENGTH, MAX_PER_PAGE, StrictSchema,
)

ROLES = ("student", "instructor")  # what anyone may register as; admins come from the CLI
MAX_ID = 2 ** 31 - 1  # ids are 32-bit integers in every service's database

NOT_UNICODE = "Not valid Unicode text (lone surrogate)."
# Control characters (C0, DEL, C1): never in a name, a title or an email; a multi-line text may
# have tabs and line breaks. They would reach mail headers, logs and other people's screens.
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CONTROL_CHARACTERS_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
ASCII_INTEGER = re.compile(r"[1-9][0-9]*|0", re.ASCII)


def check_unicode(value, path="_schema"):
    """Raise our ValidationError naming the first string (key or value) of a parsed JSON body
    that cannot be encoded as UTF-8: JSON's "\ud800" parses to a lone surrogate, which no
    service could store or send on."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput("invalid input", {path: [NOT_UNICODE]}) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            name = key.encode("utf-8", "backslashreplace").decode("utf-8")
            check_unicode(key, name)
            check_unicode(item, name if path == "_schema" else f"{path}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_unicode(item, f"{path}.{index}")


class Text(fields.String):
    """A string without control characters; ``multiline=True`` allows tab, CR and LF."""

    def __init__(self, *, multiline=False, **kwargs):
        super().__init__(**kwargs)
        self.forbidden = CONTROL_CHARACTERS_BUT_LINES if multiline else CONTROL_CHARACTERS

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if self.forbidden.search(text):
            raise ValidationError("Must not contain control characters.")
        return text


class Email(Text, fields.Email):
    pass


class AsciiInteger(fields.Integer):
    """An integer in a query string written in ASCII digits without leading zeros ("\u0661",
    "0001" and "+1" are refused, where int() would take them)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str) and not ASCII_INTEGER.fullmatch(value):
            raise ValidationError("Not a valid integer.")
        return super()._deserialize(value, attr, data, **kwargs)


def _datetime(**kwargs):
    # The services send ISO 8601 strings with an offset; passed on as they are.
    return fields.String(metadata={"format": "date-time"}, **kwargs)


# -- requests --------------------------------------------------------------------------------

class RegisterRequest(StrictSchema):
    email = Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, validate=validate.Length(max=1024), metadata={
        "description": "At least 8 characters, not a commonly used password (NIST SP 800-63B);"
                       " enforced by the auth service: a 400 names `password` otherwise."})
    name = Text(required=True, validate=validate.Length(min=1, max=100))
    role = fields.String(load_default="student", validate=validate.OneOf(ROLES))


class LoginRequest(StrictSchema):
    email = Text(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True, validate=validate.Length(max=1024))


class CourseCreateRequest(StrictSchema):
    title = Text(required=True, validate=validate.Length(min=1, max=200))
    description = Text(multiline=True, required=True, validate=validate.Length(max=20_000))


class ReviewCreateRequest(StrictSchema):
    rating = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=5))
    comment = Text(multiline=True, load_default=None, allow_none=True,
                   validate=validate.Length(max=2000))


class PageQuery(StrictSchema):
    """A numbered page (``page``) or the page after a cursor (``after``: a page's ``next``)."""
    page = AsciiInteger(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    per_page = AsciiInteger(load_default=DEFAULT_PER_PAGE,
                            validate=validate.Range(min=1, max=MAX_PER_PAGE))
    # the cursor's content is the service's to check (services/kit/schemas.py, read_cursor)
    after = Text(validate=validate.Length(min=1, max=MAX_CURSOR_LENGTH))

    @validates_schema(pass_original=True)
    def page_or_cursor(self, data, original, **kwargs):
        if "after" in original and "page" in original:
            raise ValidationError("Give a page number or a cursor, not both.", "after")


class UtcQueryDateTime(fields.AwareDateTime):
    """ISO 8601 in a query string, loaded as an aware UTC datetime (UTC when no offset is given).

    An unencoded ``+`` of an offset arrives as a space (``?since=2026-11-26T10:00:00+01:00``
    typed into curl): read back as the ``+`` it was. A moment that has no UTC equivalent
    (``0001-01-01T00:00:00+01:00``) is a 400 here, not an overflow in the analytics service.
    """
    SPACED_OFFSET = re.compile(r"^(.*T[0-9:.]+) ([0-9]{2}:?[0-9]{2})$")

    def __init__(self, **kwargs):
        super().__init__(default_timezone=timezone.utc, **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            value = self.SPACED_OFFSET.sub(r"\1+\2", value.strip())
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return moment.astimezone(timezone.utc)
        except (OverflowError, ValueError):
            raise ValidationError("Out of range once converted to UTC.") from None


class EventQuery(PageQuery):
    """GET /api/events: filters of the analytics event log (all optional; their descriptions
    are in gateway/openapi.py, EVENT_PARAMETERS)."""
    type = Text(validate=validate.Length(min=1, max=255))
    since = UtcQueryDateTime()
    until = UtcQueryDateTime()
    user_id = AsciiInteger(validate=validate.Range(min=1, max=MAX_ID))
    course_id = AsciiInteger(validate=validate.Range(min=1, max=MAX_ID))

    @validates_schema
    def until_not_before_since(self, data, **kwargs):
        if "since" in data and "until" in data and data["until"] < data["since"]:
            raise ValidationError("Must not be before since.", "until")


# -- responses -------------------------------------------------------------------------------

class ResponseSchema(Schema):
    """Dumps only the declared fields; documented as closed objects."""

    class Meta:
        unknown = "raise"


class UserSchema(ResponseSchema):
    id = fields.Integer(required=True)
    email = fields.String(required=True)
    name = fields.String(required=True)
    role = fields.String(required=True, validate=validate.OneOf(ROLES))
    created_at = _datetime(required=True)


class TokenSchema(ResponseSchema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True, validate=validate.OneOf(["bearer"]))
    expires_in = fields.Integer(required=True, metadata={"description": "seconds"})


class CourseSchema(ResponseSchema):
    id = fields.Integer(required=True)
    title = fields.String(required=True)
    description = fields.String(required=True)
    instructor_id = fields.Integer(required=True)
    created_at = _datetime(required=True)
    rating_average = fields.Float(required=True, allow_none=True)
    rating_count = fields.Integer(required=True)
    enrollment_count = fields.Integer(required=True)


class EnrollmentSchema(ResponseSchema):
    id = fields.Integer(required=True)
    user_id = fields.Integer(required=True)
    course_id = fields.Integer(required=True)
    course_title = fields.String(required=True)
    enrolled_at = _datetime(required=True)


class ReviewSchema(ResponseSchema):
    id = fields.Integer(required=True)
    user_id = fields.Integer(required=True)
    course_id = fields.Integer(required=True)
    rating = fields.Integer(required=True)
    comment = fields.String(required=True, allow_none=True)
    created_at = _datetime(required=True)


class NotificationSchema(ResponseSchema):
    id = fields.Integer(required=True)
    user_id = fields.Integer(required=True)
    kind = fields.String(required=True)
    subject = fields.String(required=True)
    body = fields.String(required=True)
    status = fields.String(required=True)
    event_id = fields.String(required=True, allow_none=True)
    created_at = _datetime(required=True)
    sent_at = _datetime(required=True, allow_none=True)


def _page_schema(item_schema, name):
    return type(name, (ResponseSchema,), {
        "items": fields.List(fields.Nested(item_schema), required=True),
        "page": fields.Integer(required=True, allow_none=True, metadata={
            "description": "The page's number; null for a page reached by a cursor (after)"}),
        "per_page": fields.Integer(required=True),
        "total": fields.Integer(required=True, metadata={
            "description": f"How many items the list has, counting at most {MAX_COUNT:,} "
                           f"({MAX_COUNT:,}: at least that many)"}),
        "next": fields.String(required=True, allow_none=True, metadata={
            "description": "The cursor of the page after this one (pass it as after); null on "
                           "the last page"}),
    })


CoursePageSchema = _page_schema(CourseSchema, "CoursePageSchema")
ReviewPageSchema = _page_schema(ReviewSchema, "ReviewPageSchema")
NotificationPageSchema = _page_schema(NotificationSchema, "NotificationPageSchema")


class LoggedEventSchema(ResponseSchema):
    id = fields.Integer(required=True, metadata={"description": "position in the log"})
    event_id = fields.String(required=True)
    event_type = fields.String(required=True)
    routing_key = fields.String(required=True, allow_none=True)
    source = fields.String(required=True, allow_none=True)
    version = fields.Integer(required=True)
    timestamp = _datetime(required=True)
    received_at = _datetime(required=True)
    data = fields.Dict(required=True, keys=fields.String())


EventPageSchema = _page_schema(LoggedEventSchema, "EventPageSchema")


class DayCountSchema(ResponseSchema):
    day = fields.String(required=True, metadata={"format": "date"})
    count = fields.Integer(required=True)


class CourseCountSchema(ResponseSchema):
    course_id = fields.Integer(required=True)
    course_title = fields.String(required=True, allow_none=True)
    count = fields.Integer(required=True)


class MinuteCountSchema(ResponseSchema):
    minute = _datetime(required=True)
    event_type = fields.String(required=True)
    count = fields.Integer(required=True)


class AnalyticsSummarySchema(ResponseSchema):
    events_total = fields.Integer(required=True)
    events_by_type = fields.Dict(required=True, keys=fields.String(), values=fields.Integer())
    registrations_per_day = fields.List(fields.Nested(DayCountSchema), required=True, metadata={
        "description": "the last 30 days (UTC) that had a registration"})
    enrollments_per_course = fields.List(fields.Nested(CourseCountSchema), required=True, metadata={
        "description": "the 10 courses with most enrollments, most first"})
    enrollments_in_other_courses = fields.Integer(required=True, metadata={
        "description": "enrollments in every other course, together"})
    rating_distribution = fields.Dict(required=True, keys=fields.String(),
                                      values=fields.Integer(), metadata={
                                          "description": "\"1\" to \"5\": how many reviews"})
    events_per_minute = fields.List(fields.Nested(MinuteCountSchema), required=True, metadata={
        "description": "the last 60 minutes (UTC), per event type"})


class ErrorSchema(ResponseSchema):
    error = fields.String(required=True, metadata={
        "description": "validation_error, bad_request, unauthorized, forbidden, not_found, "
                       "method_not_allowed, request_timeout, conflict, payload_too_large, uri_too_long, "
                       "too_many_requests, "
                       "service_unavailable or internal_error"})
    message = fields.String(required=True)
    fields_ = fields.Dict(data_key="fields", required=True, keys=fields.String(), metadata={
        "description": "field name -> its messages (marshmallow's shape); {} when none"})


class HealthSchema(ResponseSchema):
    status = fields.String(required=True, validate=validate.OneOf(["ok", "unavailable"]))
    checks = fields.Dict(required=True, keys=fields.String(), values=fields.String(), metadata={
        "description": "broker, each service and each service's database: ok, unavailable"
                       " or unknown (its service did not answer)"})
    unavailable = fields.List(fields.String(), required=True)
