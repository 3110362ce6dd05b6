"""RPC inputs (validated, raising services.kit.errors.ValidationError) and outputs of review."""

from marshmallow import Schema, fields, validate

from services.kit.schemas import StrictSchema, UtcDateTime

MAX_COMMENT_LENGTH = 2000


def id_field():
    """An id: a JSON integer (strict), positive."""
    return fields.Integer(required=True, strict=True, validate=validate.Range(min=1))


class CreateReviewArgs(StrictSchema):
    user_id = id_field()
    course_id = id_field()
    rating = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=5))
    comment = fields.String(load_default=None, allow_none=True,
                            validate=validate.Length(max=MAX_COMMENT_LENGTH))


class CourseIdArgs(StrictSchema):
    course_id = id_field()


class ReviewSchema(Schema):
    id = fields.Integer()
    user_id = fields.Integer()
    course_id = fields.Integer()
    rating = fields.Integer()
    comment = fields.String(allow_none=True)
    created_at = UtcDateTime()
