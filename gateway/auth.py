"""Bearer tokens (JWT, HS256 only) and who a request acts for.

Tokens carry ``sub`` (the user id, as a string: RFC 7519 says StringOrURI), ``role``, ``iat``
and ``exp``. Decoding accepts HS256 only (a fixed list: ``alg: none``, RS256/HS512 tokens and any
other algorithm are refused), requires ``exp`` and ``sub``, and checks the signature with
``JWT_SECRET``.

The secret has a development default so that ``make run`` works out of the box; the gateway logs
a warning when it uses it, and refuses to start when ``ENVIRONMENT`` is ``production`` and the
secret is the default or shorter than 32 bytes.
"""
import logging
import re
import time
from dataclasses import dataclass

import jwt
from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider

from services.kit.errors import Unauthorized

log = logging.getLogger(__name__)

DEV_JWT_SECRET = "dev-only-insecure-jwt-secret-CHANGE-ME"
MIN_SECRET_BYTES = 32
ALGORITHM = "HS256"
ALGORITHMS = [ALGORITHM]
DEFAULT_TTL_SECONDS = 3600
ROLES = ("student", "instructor", "admin")  # admin: only from `knowledge-nest create-admin`
MAX_TOKEN_CHARS = 4096
# ``sub`` as we write it: ASCII digits, no leading zero ("\u00b2", "\u2460", "0001" are refused)
SUBJECT = re.compile(r"[1-9][0-9]{0,9}", re.ASCII)


@dataclass(frozen=True)
class Principal:
    user_id: int
    role: str

    @property
    def is_instructor(self):
        return self.role == "instructor"

    @property
    def is_admin(self):
        return self.role == "admin"


def check_secret(secret, environment):
    """Raise ConfigurationError for a secret that must not run in production; warn otherwise."""
    problems = []
    if not secret or secret == DEV_JWT_SECRET:
        problems.append("JWT_SECRET is the built-in development default")
    elif len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        problems.append(f"JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes")
    if not problems:
        return
    if str(environment).lower() == "production":
        raise ConfigurationError(
            f"refusing to start with ENVIRONMENT=production: {problems[0]}; set JWT_SECRET to "
            f"a random value of at least {MIN_SECRET_BYTES} bytes")
    log.warning("!!! %s: anyone who knows it can forge tokens. Fine for development only; set "
                "JWT_SECRET (>= %d random bytes) before exposing this gateway. !!!",
                problems[0], MIN_SECRET_BYTES)


class Tokens:
    def __init__(self, secret, ttl_seconds):
        self.secret = secret
        self.ttl_seconds = ttl_seconds

    def issue(self, user):
        now = int(time.time())
        claims = {"sub": str(user["id"]), "role": user["role"], "iat": now,
                  "exp": now + self.ttl_seconds}
        token = jwt.encode(claims, self.secret, algorithm=ALGORITHM)
        return {"access_token": token, "token_type": "bearer", "expires_in": self.ttl_seconds}

    def decode(self, token):
        try:
            claims = jwt.decode(token, self.secret, algorithms=ALGORITHMS,
                                options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("token expired") from None
        except jwt.InvalidTokenError:
            raise Unauthorized("invalid token") from None
        sub, role = claims.get("sub"), claims.get("role")
        if not (isinstance(sub, str) and SUBJECT.fullmatch(sub) and int(sub) < 2 ** 31):
            raise Unauthorized("invalid token")
        if role not in ROLES:
            raise Unauthorized("invalid token")
        return Principal(int(sub), role)

    def principal(self, request):
        """Who ``request`` acts for, from its ``Authorization: Bearer`` header alone."""
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthorized("missing bearer token")
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("invalid token")
        return self.decode(token)


class TokenAuth(DependencyProvider):
    """Gives workers a ``Tokens``; checks the secret when the service starts."""

    def setup(self):
        config = self.container.config
        self.secret = str(config.get("JWT_SECRET") or DEV_JWT_SECRET)
        self.ttl_seconds = int(config.get("JWT_TTL_SECONDS", DEFAULT_TTL_SECONDS))
        if self.ttl_seconds <= 0:
            raise ConfigurationError("JWT_TTL_SECONDS must be positive")
        check_secret(self.secret, config.get("ENVIRONMENT", "development"))

    def get_dependency(self, worker_ctx):
        return Tokens(self.secret, self.ttl_seconds)
