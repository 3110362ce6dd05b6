"""RPC inputs (validated, raising services.kit.errors.ValidationError) and outputs of auth."""

from marshmallow import Schema, ValidationError, fields, pre_load, validate, validates

from services.kit.schemas import StrictSchema, UtcDateTime
from services.auth.passwords import password_problems

# "admin" is given only by `knowledge-nest create-admin` (RPC); the gateway's public register
# accepts student and instructor only (gateway/schemas.py RegisterRequest).
ROLES = ("student", "instructor", "admin")


def normalize_email(email):
    """What we store and compare: stripped and lowercased (unique case-insensitively)."""
    return email.strip().lower() if isinstance(email, str) else email


class RegisterArgs(StrictSchema):
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(required=True)
    name = fields.String(required=True, validate=validate.Length(min=1, max=100))
    role = fields.String(load_default="student", validate=validate.OneOf(ROLES))

    @pre_load
    def normalize(self, data, **kwargs):
        data = dict(data)
        data["email"] = normalize_email(data.get("email"))
        if isinstance(data.get("name"), str):
            data["name"] = data["name"].strip()
        return data

    @validates("password")
    def check_password(self, value, **kwargs):
        problems = password_problems(value)
        if problems:
            raise ValidationError(problems)


class AuthenticateArgs(StrictSchema):
    email = fields.String(required=True)
    password = fields.String(required=True)
    # who is trying (the gateway passes the HTTP client's address); None: no per-address limit
    client_address = fields.String(load_default=None, allow_none=True,
                                   validate=validate.Length(max=100))

    @pre_load
    def normalize(self, data, **kwargs):
        data = dict(data)
        data["email"] = normalize_email(data.get("email"))
        return data


class UserIdArgs(StrictSchema):
    user_id = fields.Integer(required=True, strict=True)


class UserSchema(Schema):
    """What leaves the service about a user: never the password hash."""
    id = fields.Integer()
    email = fields.String()
    name = fields.String()
    role = fields.String()
    created_at = UtcDateTime()
