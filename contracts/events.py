"""The event contract: one entry per event type, the one place its shape is written.

Each ``Contract`` names the routing key (= event type), its version, the one service that may
publish it (``owner``), the fields of its ``data`` with their types, and which of those fields
are personal data (a public page must not show them)::

    from contracts import COURSE_ENROLLED
    self.dispatch(COURSE_ENROLLED, data)  # the producer: the kit checks it (ContractViolation)
    COURSE_ENROLLED.read(event.data)      # a consumer: typed, unknown fields ignored, or
                                          # InvalidEventData (parked)
    COURSE_ENROLLED.public(event.data)    # the dashboard: without its personal fields

Evolution: adding a field keeps the version (consumers ignore fields they do not know, and a
new field is optional for them until every producer sends it); removing, renaming or retyping
one needs a new version (tests/unit/test_contracts.py holds every published version's fields
and fails otherwise).
"""
import marshmallow
from marshmallow import Schema, fields, validate

from services.kit.envelope import InvalidEvent
from services.kit.errors import ValidationError

# The exchange every event goes to, with its type as the routing key.
EXCHANGE = "knowledge_nest_events"


class ContractViolation(ValueError):
    """A producer tried to publish data that breaks its event type's contract."""

    def __init__(self, event_type, problems):
        super().__init__(f"{event_type} does not match its contract: {problems}")
        self.event_type = event_type
        self.problems = problems


class InvalidEventData(InvalidEvent, ValidationError):
    """An event's data lacks what its contract promises: the kit parks it at once (no retry can
    help), with this reason; to code that validates it is a ValidationError naming the fields."""

    def __init__(self, event_type, messages):
        ValidationError.__init__(self, f"{event_type} data does not match its contract: "
                                       f"{messages}", messages)


class EventData(Schema):
    """A payload's fields. Consumers read it liberally: fields they do not know are ignored."""

    class Meta:
        unknown = marshmallow.EXCLUDE


class UserRegistered(EventData):
    user_id = fields.Integer(required=True, strict=True, metadata={"description": "the new user"})
    email = fields.Email(required=True, metadata={"description": "stripped and lowercased"})
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))


class CourseCreated(EventData):
    course_id = fields.Integer(required=True, strict=True)
    title = fields.String(required=True, validate=validate.Length(min=1, max=300))
    instructor_id = fields.Integer(required=True, strict=True,
                                   metadata={"description": "the user who created it"})


class CourseEnrolled(EventData):
    # optional for readers: a plain client's event in the seed's format may lack it
    enrollment_id = fields.Integer(load_default=None, strict=True)
    user_id = fields.Integer(required=True, strict=True, metadata={"description": "the student"})
    course_id = fields.Integer(required=True, strict=True)
    course_title = fields.String(required=True, validate=validate.Length(min=1, max=300))


class ReviewCreated(EventData):
    review_id = fields.Integer(load_default=None, strict=True)
    user_id = fields.Integer(required=True, strict=True, metadata={"description": "the reviewer"})
    course_id = fields.Integer(required=True, strict=True)
    rating = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=5))
    has_comment = fields.Boolean(load_default=False)


class Contract(str):
    """One event type's contract. It is also the type's name (a ``str``), so it goes wherever an
    event type goes: ``self.dispatch(COURSE_ENROLLED, data)``, ``@event_handler(COURSE_ENROLLED)``,
    ``COURSE_ENROLLED == "course.enrolled"``.
    """

    def __new__(cls, event_type, version, owner, summary, data, personal=frozenset()):
        contract = super().__new__(cls, event_type)
        contract.version = version
        contract.owner = owner  # the service that publishes it; consumers refuse it from others
        contract.summary = summary
        contract.data = data
        contract.personal = frozenset(personal)  # fields a public page must not show
        return contract

    @property
    def event_type(self):
        """The routing key, as a plain string."""
        return str(self)

    @property
    def field_names(self):
        return tuple(self.data().fields)

    def check(self, data):
        """The producer's side: exactly the declared fields, each well typed and present."""
        schema = self.data(unknown=marshmallow.RAISE)
        try:
            loaded = schema.load(data)
        except marshmallow.ValidationError as exc:
            raise ContractViolation(self.event_type, exc.messages) from None
        missing = {name: ["Missing data for required field."] for name in self.field_names
                   if name not in data}
        if missing:  # optional for readers, never for the owner
            raise ContractViolation(self.event_type, missing)
        return loaded

    def read(self, data):
        """A consumer's side: the declared fields, typed; InvalidEventData (the DLQ) if unusable."""
        try:
            return self.data().load(data)
        except marshmallow.ValidationError as exc:
            raise InvalidEventData(self.event_type, exc.messages) from None

    def public(self, data):
        """``data`` without its personal fields (and without fields the contract does not know)."""
        return {name: data[name] for name in self.field_names
                if name in data and name not in self.personal}


CONTRACTS = {contract.event_type: contract for contract in (
    Contract("user.registered", 1, owner="auth", data=UserRegistered,
             personal=frozenset({"email", "name"}),
             summary="A person registered (any role); the welcome mail goes to this address."),
    Contract("course.created", 1, owner="course", data=CourseCreated,
             summary="An instructor published a course."),
    Contract("course.enrolled", 1, owner="course", data=CourseEnrolled,
             summary="A student enrolled in a course."),
    Contract("review.created", 1, owner="review", data=ReviewCreated,
             summary="An enrolled student reviewed a course (rating 1-5)."),
)}

USER_REGISTERED = CONTRACTS["user.registered"]
COURSE_CREATED = CONTRACTS["course.created"]
COURSE_ENROLLED = CONTRACTS["course.enrolled"]
REVIEW_CREATED = CONTRACTS["review.created"]
EVENT_TYPES = tuple(CONTRACTS)
OWNERS = {event_type: contract.owner for event_type, contract in CONTRACTS.items()}


def contract_for(event_type):
    """The contract of ``event_type``; KeyError naming the known types if there is none."""
    try:
        return CONTRACTS[event_type]
    except KeyError:
        raise KeyError(f"no contract for event type {event_type!r} "
                       f"(known: {', '.join(EVENT_TYPES)}; contracts/events.py)") from None
