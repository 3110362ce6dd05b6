"""auth's business rules, as plain functions of a SQLAlchemy session (the service wires them).

They do not commit: the kit commits each RPC's session when it succeeds (services/kit/rpc.py).
"""
import logging

from sqlalchemy import select

from contracts import USER_REGISTERED
from services.auth.models import EMAIL_TAKEN, User
from services.auth.schemas import AuthenticateArgs, RegisterArgs, UserIdArgs, UserSchema
from services.kit.errors import Conflict, NotFound, Unauthorized, ValidationError
from services.kit.schemas import dumper

log = logging.getLogger(__name__)

BAD_CREDENTIALS = "invalid email or password"


def register(session, passwords, dispatch, email, password, name, role="student"):
    args = RegisterArgs.shared().load_or_raise(
        {"email": email, "password": password, "name": name, "role": role})
    password_hash = passwords.hash(args["password"])  # before holding a database connection
    # The check gives the usual case a clean answer (no failed INSERT); the unique index
    # settles a race with the same Conflict (models.py).
    if session.execute(select(User.id).where(User.email == args["email"])).first():
        raise Conflict(EMAIL_TAKEN, {"email": [EMAIL_TAKEN]})
    user = User(email=args["email"], password_hash=password_hash, name=args["name"],
                role=args["role"])
    session.add(user)
    session.flush()  # the id, for the event
    dispatch(USER_REGISTERED, {"user_id": user.id, "email": user.email, "name": user.name})
    log.info("user %s registered as %s", user.id, user.role)
    return dumper(UserSchema).dump(user)


def authenticate(session, passwords, throttle, email, password, client_address=None):
    """The user, or Unauthorized; TooManyRequests before any password check while the client
    address or the account is in a throttle delay (services/auth/throttle.py)."""
    try:
        args = AuthenticateArgs.shared().load_or_raise(
            {"email": email, "password": password, "client_address": client_address})
    except ValidationError:  # not even an email and a password: just as unknown
        raise Unauthorized(BAD_CREDENTIALS) from None
    email, address = args["email"], args["client_address"]
    throttle.admit(session, email, address)  # TooManyRequests: no argon2 for a refused attempt
    user = session.execute(select(User).where(User.email == email)).scalar_one_or_none()
    password_hash, user_id = (user.password_hash, user.id) if user else (None, None)
    session.rollback()  # no transaction (nor SQLite's lock) held during argon2
    # Always one argon2 verification: against a dummy hash when there is no such user.
    if not passwords.verify(password_hash, args["password"]):
        throttle.failed(session, email, address)
        raise Unauthorized(BAD_CREDENTIALS)
    throttle.succeeded(session, email, address)
    user = session.get(User, user_id)
    if passwords.needs_rehash(user.password_hash):  # cost parameters were raised since
        user.password_hash = passwords.hash(args["password"])
    return dumper(UserSchema).dump(user)


def get_user(session, user_id):
    args = UserIdArgs.shared().load_or_raise({"user_id": user_id})
    user = session.get(User, args["user_id"])
    if user is None:
        raise NotFound(f"user {args['user_id']} does not exist")
    return dumper(UserSchema).dump(user)
