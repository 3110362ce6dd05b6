"""The OpenAPI 3 document of the gateway, generated with apispec from gateway/schemas.py.

Served at ``GET /api/openapi.json``. Every operation lists every status it can answer with; all
errors share the ``Error`` schema.
"""
import functools

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from gateway import schemas

OPENAPI_VERSION = "3.0.3"

ERROR_DESCRIPTIONS = {
    400: "Invalid input: bad JSON, wrong content type, unknown fields, wrong types or values"
         " (`fields` names each)",
    401: "No token, a bad or expired token",
    403: "Not allowed for this user",
    404: "No such resource",
    405: "Method not allowed on this path",
    409: "Conflict with the current state",
    408: "The request's headers or body did not arrive in time (HTTP_*_TIMEOUT)",
    413: "Request body larger than MAX_BODY_BYTES",
    429: "Logins from this address or for this account are in a throttle delay (see "
         "Retry-After), or too many open connections from this address",
    500: "A bug (never the details)",
    503: "A service did not answer in time",
}

COURSE_ID = {
    "name": "course_id", "in": "path", "required": True,
    "schema": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_ID},
    "description": "ASCII digits without a leading zero; anything else (not a number, 0, "
                   "0001, other scripts' digits, out of range) is a 404.",
}
PAGE_PARAMETERS = [
    {"name": "page", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1}},
    {"name": "per_page", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_PER_PAGE,
                "default": schemas.DEFAULT_PER_PAGE}},
    {"name": "after", "in": "query", "required": False,
     "schema": {"type": "string", "minLength": 1, "maxLength": schemas.MAX_CURSOR_LENGTH},
     "description": "A page's `next` cursor: the page after it, at any depth (not with page). "
                    "Numbered pages reach the first 10,000 items; cursors have no limit."},
]
EVENT_PARAMETERS = [
    {"name": "type", "in": "query", "required": False,
     "schema": {"type": "string", "minLength": 1, "maxLength": 255},
     "description": "event type, e.g. course.enrolled"},
    # ISO 8601 rather than RFC 3339's date-time (no "format"): an offset is optional (UTC then),
    # and so is the time of day ("2026-11-26"); what is not a moment is a 400 naming the field
    {"name": "since", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "ISO 8601; events at or after it (UTC when no offset is given)",
     "example": "2026-11-26T00:00:00Z"},
    {"name": "until", "in": "query", "required": False, "schema": {"type": "string"},
     "description": "ISO 8601; events before it (UTC when no offset is given); not before since",
     "example": "2026-11-27T00:00:00Z"},
    {"name": "user_id", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_ID}},
    {"name": "course_id", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 1, "maximum": schemas.MAX_ID}},
]
BEARER = [{"bearerAuth": []}]
PLAIN_ERRORS = {str(status): {"description": ERROR_DESCRIPTIONS[status], "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for status in (405, 413)}


def _json(schema):
    return {"content": {"application/json": {"schema": schema}}}


def _operation(summary, ok_status, ok_schema, errors, body=None, parameters=(), secured=False,
               ok_description="OK"):
    # 408/413: any request with a slow or large body; 429: too many connections from one address
    errors = sorted(set(errors) | {405, 408, 413, 429, 500, 503})
    responses = {str(ok_status): {"description": ok_description, **_json(ok_schema)}}
    for status in errors:
        response = {"description": ERROR_DESCRIPTIONS[status], **_json("Error")}
        if status == 429:
            response["headers"] = {"Retry-After": {
                "description": "seconds", "schema": {"type": "integer", "minimum": 1}}}
        if status == 405:
            response["headers"] = {"Allow": {"schema": {"type": "string"}}}
        responses[str(status)] = response
    operation = {"summary": summary, "responses": responses}
    if parameters:
        operation["parameters"] = list(parameters)
    if body is not None:
        operation["requestBody"] = {"required": True, **_json(body)}
    if secured:
        operation["security"] = BEARER
    return operation


@functools.lru_cache(maxsize=1)
def openapi_document():
    spec = APISpec(title="KnowledgeNest API", version="1.0.0", openapi_version=OPENAPI_VERSION,
                   plugins=[MarshmallowPlugin()],
                   info={"description": "HTTP gateway of KnowledgeNest. Who a request acts for "
                                        "comes from its bearer token (POST /api/auth/login)."})
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer",
                                                   "bearerFormat": "JWT"})
    for name, schema in [
            ("Error", schemas.ErrorSchema), ("User", schemas.UserSchema),
            ("Token", schemas.TokenSchema), ("Course", schemas.CourseSchema),
            ("CoursePage", schemas.CoursePageSchema), ("Enrollment", schemas.EnrollmentSchema),
            ("Review", schemas.ReviewSchema), ("ReviewPage", schemas.ReviewPageSchema),
            ("Notification", schemas.NotificationSchema),
            ("NotificationPage", schemas.NotificationPageSchema),
            ("Health", schemas.HealthSchema), ("LoggedEvent", schemas.LoggedEventSchema),
            ("EventPage", schemas.EventPageSchema),
            ("AnalyticsSummary", schemas.AnalyticsSummarySchema), ("RegisterRequest", schemas.RegisterRequest),
            ("LoginRequest", schemas.LoginRequest),
            ("CourseCreateRequest", schemas.CourseCreateRequest),
            ("ReviewCreateRequest", schemas.ReviewCreateRequest)]:
        spec.components.schema(name, schema=schema)

    body_errors = (400, 413)
    spec.path("/api/auth/register", operations={"post": _operation(
        "Register (role: student by default, or instructor)", 201, "User",
        body_errors + (409,), body="RegisterRequest", ok_description="Created")})
    spec.path("/api/auth/login", operations={"post": _operation(
        "Log in: a bearer token", 200, "Token", body_errors + (401, 429), body="LoginRequest")})
    spec.path("/api/users/me", operations={"get": _operation(
        "The signed-in user", 200, "User", (401,), secured=True)})
    spec.path("/api/users/me/notifications", operations={"get": _operation(
        "Notifications sent to the signed-in user, newest first", 200, "NotificationPage",
        (400, 401), parameters=PAGE_PARAMETERS, secured=True)})
    spec.path("/api/courses", operations={
        "get": _operation("Courses, newest first", 200, "CoursePage", (400,),
                          parameters=PAGE_PARAMETERS),
        "post": _operation("Create a course (instructors)", 201, "Course",
                           body_errors + (401, 403), body="CourseCreateRequest", secured=True,
                           ok_description="Created")})
    spec.path("/api/courses/{course_id}", operations={"get": _operation(
        "One course", 200, "Course", (404,), parameters=[COURSE_ID])})
    spec.path("/api/courses/{course_id}/enroll", operations={"post": _operation(
        "Enroll the signed-in user", 201, "Enrollment", (401, 403, 404, 409, 413),
        parameters=[COURSE_ID], secured=True, ok_description="Created")})
    spec.path("/api/courses/{course_id}/reviews", operations={
        "get": _operation("Reviews of a course, newest first", 200, "ReviewPage", (400, 404),
                          parameters=[COURSE_ID] + PAGE_PARAMETERS),
        "post": _operation("Review a course the signed-in user is enrolled in", 201, "Review",
                           body_errors + (401, 403, 404, 409), body="ReviewCreateRequest",
                           parameters=[COURSE_ID], secured=True, ok_description="Created")})
    spec.path("/api/events", operations={"get": _operation(
        "The event log (admins), newest first", 200, "EventPage", (400, 401, 403),
        parameters=EVENT_PARAMETERS + PAGE_PARAMETERS, secured=True)})
    spec.path("/api/analytics/summary", operations={"get": _operation(
        "Aggregates of every event: registrations per day, enrollments per course, ratings, "
        "events per minute", 200, "AnalyticsSummary", ())})
    # Not documented here (not JSON): GET /dashboard (the live page), GET /api/events/stream
    # (text/event-stream, endless) and GET /api/events/ws (WebSocket); see docs/dashboard.md.
    spec.path("/health", operations={"get": {
        "summary": "Broker, services and their databases",
        "responses": {"200": {"description": "All answer", **_json("Health")},
                      "503": {"description": "Something does not answer (named in "
                                             "`unavailable`)", **_json("Health")},
                      **PLAIN_ERRORS}}})
    spec.path("/api/openapi.json", operations={"get": {
        "summary": "This document",
        "responses": {"200": {"description": "OpenAPI 3", **_json({"type": "object"})},
                      **PLAIN_ERRORS}}})
    spec.path("/api/asyncapi.json", operations={"get": {
        "summary": "The event contract: every event on the broker, as AsyncAPI 3.0",
        "responses": {"200": {"description": "AsyncAPI 3.0 (docs/asyncapi.json)",
                              **_json({"type": "object"})},
                      **PLAIN_ERRORS}}})
    return spec.to_dict()
