"""Errors that cross RPC as themselves, not as a ``RemoteError`` string.

A service raises one; nameko serializes its class path and args; the caller (the gateway, another
service) gets an instance of the same class back, because each is registered with nameko's
``deserialize_to_instance``. The gateway maps each to an HTTP status in one table.

    raise ValidationError("invalid input", {"email": ["Not a valid email address."]})
    raise NotFound("course 7 does not exist")
"""
import math

from nameko.exceptions import deserialize_to_instance


class ServiceError(Exception):
    """Base of the errors a caller is expected to handle. ``code`` names it in HTTP bodies."""
    code = "error"

    def __init__(self, message="", fields=None):
        super().__init__(message, fields or {})
        self.message = message
        self.fields = fields or {}

    def __str__(self):
        return self.message


@deserialize_to_instance
class ValidationError(ServiceError):
    """Bad input; ``fields`` maps each field to its messages (marshmallow's shape)."""
    code = "validation_error"


@deserialize_to_instance
class NotFound(ServiceError):
    code = "not_found"


@deserialize_to_instance
class Conflict(ServiceError):
    code = "conflict"


@deserialize_to_instance
class Forbidden(ServiceError):
    code = "forbidden"


@deserialize_to_instance
class Unauthorized(ServiceError):
    code = "unauthorized"


@deserialize_to_instance
class TooManyRequests(ServiceError):
    """Refused for now (login throttle); ``retry_after``: whole seconds until it may be tried."""
    code = "too_many_requests"

    def __init__(self, message="", retry_after=1):
        retry_after = max(1, math.ceil(float(retry_after)))  # nameko sends args as strings
        Exception.__init__(self, message, retry_after)  # the args nameko sends across RPC
        self.message = message
        self.fields = {}
        self.retry_after = retry_after


@deserialize_to_instance
class ServiceUnavailable(ServiceError):
    """A service (or its database, or the broker) did not answer in time."""
    code = "service_unavailable"


@deserialize_to_instance
class Busy(ServiceUnavailable):
    """A service refused the request at once because it is at capacity; its message says why
    (the gateway passes it on with a 503 and Retry-After)."""
    retry_after = 1


# Raised by entrypoints as expected outcomes: nameko logs them as warnings, not errors.
EXPECTED_ERRORS = (ValidationError, NotFound, Conflict, Forbidden, Unauthorized, TooManyRequests)
