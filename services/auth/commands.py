"""auth's business rules, as plain functions of a SQLAlchemy session (the service wires them)."""
import logging

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from contracts import USER_REGISTERED
from services.auth.models import User
from services.auth.schemas import AuthenticateArgs, RegisterArgs, UserIdArgs, UserSchema
from services.kit.errors import Conflict, NotFound, Unauthorized, ValidationError

log = logging.getLogger(__name__)

EMAIL_TAKEN = "this email address is already registered"
BAD_CREDENTIALS = "invalid email or password"


def register(session, passwords, dispatch, email, password, name, role="student"):
    args = RegisterArgs().load_or_raise(
        {"email": email, "password": password, "name": name, "role": role})
    password_hash = passwords.hash(args["password"])  # before holding a database connection
    # The check gives the usual case a clean answer; the unique index settles a race.
    if session.execute(select(User.id).where(User.email == args["email"])).first():
        raise Conflict(EMAIL_TAKEN, {"email": [EMAIL_TAKEN]})
    user = User(email=args["email"], password_hash=password_hash, name=args["name"],
                role=args["role"])
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise Conflict(EMAIL_TAKEN, {"email": [EMAIL_TAKEN]}) from None
    dispatch(USER_REGISTERED, {"user_id": user.id, "email": user.email, "name": user.name})
    try:
        session.commit()
    except IntegrityError:  # the other register committed between our flush and commit
        session.rollback()
        raise Conflict(EMAIL_TAKEN, {"email": [EMAIL_TAKEN]}) from None
    log.info("user %s registered as %s", user.id, user.role)
    return UserSchema().dump(user)


def authenticate(session, passwords, email, password):
    try:
        args = AuthenticateArgs().load_or_raise({"email": email, "password": password})
    except ValidationError:  # not even an email and a password: just as unknown
        raise Unauthorized(BAD_CREDENTIALS) from None
    user = session.execute(select(User).where(User.email == args["email"])).scalar_one_or_none()
    password_hash, answer = (user.password_hash, UserSchema().dump(user)) if user else (None, None)
    # The connection goes back to the pool before the slow hash: on SQLite it is the only one,
    # and holding it would make every other request of the service wait for this hash.
    session.rollback()
    # Always one argon2 verification: against a dummy hash when there is no such user.
    if not passwords.verify(password_hash, args["password"]):
        raise Unauthorized(BAD_CREDENTIALS)
    if passwords.needs_rehash(password_hash):  # cost parameters were raised since
        new_hash = passwords.hash(args["password"])
        session.execute(update(User).where(User.id == answer["id"],
                                           User.password_hash == password_hash)
                        .values(password_hash=new_hash))
        session.commit()
    return answer


def get_user(session, user_id):
    args = UserIdArgs().load_or_raise({"user_id": user_id})
    user = session.get(User, args["user_id"])
    if user is None:
        raise NotFound(f"user {args['user_id']} does not exist")
    return UserSchema().dump(user)
