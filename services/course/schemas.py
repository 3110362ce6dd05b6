"""RPC inputs (validated, raising services.kit.errors.ValidationError) and outputs of course."""

from marshmallow import Schema, fields, pre_load, validate

from services.kit.schemas import StrictSchema, UtcDateTime


def id_field():
    """An id: a JSON integer (strict), positive."""
    return fields.Integer(required=True, strict=True, validate=validate.Range(min=1))


class CreateCourseArgs(StrictSchema):
    instructor_id = id_field()
    title = fields.String(required=True, validate=validate.Length(min=1, max=200))
    description = fields.String(required=True, validate=validate.Length(max=20_000))

    @pre_load
    def strip(self, data, **kwargs):
        data = dict(data)
        for key in ("title", "description"):
            if isinstance(data.get(key), str):
                data[key] = data[key].strip()
        return data


class CourseIdArgs(StrictSchema):
    course_id = id_field()


class EnrollArgs(StrictSchema):
    user_id = id_field()
    course_id = id_field()


class UserIdArgs(StrictSchema):
    user_id = id_field()


class CourseSchema(Schema):
    id = fields.Integer()
    title = fields.String()
    description = fields.String()
    instructor_id = fields.Integer()
    created_at = UtcDateTime()
    rating_average = fields.Float(allow_none=True)
    rating_count = fields.Integer()
    enrollment_count = fields.Integer()


class EnrollmentSchema(Schema):
    id = fields.Integer()
    user_id = fields.Integer()
    course_id = fields.Integer()
    course_title = fields.String()
    enrolled_at = UtcDateTime()
