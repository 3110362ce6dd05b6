"""Bearer tokens (JWT, HS256 only) and who a request acts for.

Tokens carry ``sub`` (the user id, as a string: RFC 7519 says StringOrURI), ``role``, ``iat``
and ``exp``. Decoding accepts HS256 only (a fixed list: ``alg: none``, RS256/HS512 tokens and any
other algorithm are refused), requires ``exp`` and ``sub``, and checks the signature with
``JWT_SECRET``.

The secret has a development default so that ``make run`` works out of the box; the gateway logs
a warning when it uses it. It refuses to start when ``ENVIRONMENT`` is neither ``development``
nor ``production``, and in production when the secret is the default, the placeholder of
.env.example (or any "change-me"-like one), shorter than 32 bytes, a common password, or of low
entropy (``secret_problem``).
"""
import logging
import math
import re
import time
import zlib
from collections import Counter
from dataclasses import dataclass

import jwt
from nameko.exceptions import ConfigurationError
from nameko.extensions import DependencyProvider

from gateway.settings import ENVIRONMENT, JWT_SECRET, JWT_TTL_SECONDS, USER_CACHE_SECONDS
from services.auth.passwords import common_passwords
from services.kit.config import refuse_to_start
from services.kit.errors import NotFound, Unauthorized

log = logging.getLogger(__name__)

DEV_JWT_SECRET = JWT_SECRET.default
ENV_EXAMPLE_JWT_SECRET = "change-me-to-48-random-characters-before-any-real-use"  # .env.example
PLACEHOLDER_MARKERS = ("change-me", "changeme", "changethis", "placeholder", "example",
                       "dev-only", "insecure", "your-secret", "secret-key")
MIN_SECRET_BYTES = 32
MIN_SECRET_BITS = 96  # estimated_bits(): any random 32-character hex string passes, "x" * 32 not
ENVIRONMENTS = ("development", "production")
ZLIB_OVERHEAD_BYTES = 8  # zlib's header and checksum
ALGORITHM = "HS256"
ALGORITHMS = [ALGORITHM]
ROLES = ("student", "instructor", "admin")  # admin: only from `knowledge-nest create-admin`
MAX_TOKEN_CHARS = 4096
# ``sub`` as we write it: ASCII digits, no leading zero ("\u00b2", "\u2460", "0001" are refused)
SUBJECT = re.compile(r"[1-9][0-9]{0,9}", re.ASCII)


@dataclass(frozen=True)
class Principal:
    user_id: int
    role: str

    @property
    def is_admin(self):
        return self.role == "admin"


def check_environment(environment):
    """The ENVIRONMENT setting, lowercased; an unknown one (``prod``) stops the start rather
    than silently meaning development."""
    name = str(environment or "").strip().lower()
    if name not in ENVIRONMENTS:
        refuse_to_start(f"ENVIRONMENT is {environment!r}: it must be one of "
                        f"{', '.join(ENVIRONMENTS)}")
    return name


def estimated_bits(secret):
    """A rough upper bound of a secret's entropy: the smaller of its length times the Shannon
    entropy of its characters and the bits it takes compressed (which sees repeated patterns).
    ``x`` * 32 scores 0, "abc123" * 8 about 70, a random 32-character hex string 100 to
    120, token_urlsafe(48) about 350."""
    if not secret:
        return 0.0
    counts = Counter(secret)
    per_char = -sum(n / len(secret) * math.log2(n / len(secret)) for n in counts.values())
    compressed = (len(zlib.compress(secret.encode("utf-8"), 9)) - ZLIB_OVERHEAD_BYTES) * 8
    return min(per_char * len(secret), compressed)


def secret_problem(secret):
    """Why ``secret`` must not sign production tokens, or None."""
    if not secret or secret == DEV_JWT_SECRET:
        return "JWT_SECRET is the built-in development default"
    lowered = secret.lower()
    if secret == ENV_EXAMPLE_JWT_SECRET or any(marker in lowered.replace("_", "-")
                                               for marker in PLACEHOLDER_MARKERS):
        return "JWT_SECRET is a placeholder (as in .env.example)"
    if len(secret.encode("utf-8")) < MIN_SECRET_BYTES:
        return f"JWT_SECRET is shorter than {MIN_SECRET_BYTES} bytes"
    if lowered in common_passwords():
        return "JWT_SECRET is a commonly used password"
    if estimated_bits(secret) < MIN_SECRET_BITS:
        return "JWT_SECRET has too little entropy (repeated or few distinct characters)"
    return None


def check_secret(secret, environment):
    """Stop the start over a secret that must not run in production; warn otherwise."""
    environment = check_environment(environment)
    problem = secret_problem(secret)
    if problem is None:
        return
    if environment == "production":
        refuse_to_start(
            f"refusing to start with ENVIRONMENT=production: {problem}; set JWT_SECRET to a "
            f"random value of at least {MIN_SECRET_BYTES} bytes (python3 -c \"import secrets; "
            f"print(secrets.token_urlsafe(48))\")")
    log.warning("!!! %s: anyone who knows it can forge tokens. Fine for development only; set "
                "JWT_SECRET (>= %d random bytes) before exposing this gateway. !!!",
                problem, MIN_SECRET_BYTES)


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


class KnownUsers:
    """Whether a token's user exists (and still has the token's role), from auth's
    ``get_user``, remembered for ``ttl_seconds``: a signed-in request costs no extra RPC while
    its user is in the cache, and a removed user is refused within ``ttl_seconds``."""

    MAX_ENTRIES = 100_000

    def __init__(self, ttl_seconds, clock=time.monotonic):
        self.ttl_seconds = ttl_seconds
        self.clock = clock
        self._roles = {}  # user id -> (expires at, role or None: no such user)

    def check(self, principal, get_user):
        """``principal`` if its user exists with its role, else Unauthorized."""
        now = self.clock()
        entry = self._roles.get(principal.user_id)
        if entry is None or entry[0] <= now:
            try:
                role = get_user(principal.user_id)["role"]
            except NotFound:
                role = None
            if len(self._roles) >= self.MAX_ENTRIES:
                self._roles = {key: value for key, value in self._roles.items() if value[0] > now}
                if len(self._roles) >= self.MAX_ENTRIES:
                    self._roles.clear()
            entry = self._roles[principal.user_id] = (now + self.ttl_seconds, role)
        if entry[1] is None:
            raise Unauthorized("the token's user does not exist")
        if entry[1] != principal.role:
            raise Unauthorized("the token's role is out of date; sign in again")
        return principal


class KnownUsersCache(DependencyProvider):
    """One ``KnownUsers`` per gateway process (USER_CACHE_SECONDS)."""

    def setup(self):
        ttl = USER_CACHE_SECONDS.read(self.container.config)
        if ttl < 0:
            raise ConfigurationError("USER_CACHE_SECONDS must not be negative")
        self.known_users = KnownUsers(ttl)

    def get_dependency(self, worker_ctx):
        return self.known_users


class TokenAuth(DependencyProvider):
    """Gives workers a ``Tokens``; checks the secret when the service starts."""

    def setup(self):
        config = self.container.config
        self.secret = JWT_SECRET.read(config)
        self.ttl_seconds = JWT_TTL_SECONDS.read(config)
        if self.ttl_seconds <= 0:
            raise ConfigurationError("JWT_TTL_SECONDS must be positive")
        check_secret(self.secret, ENVIRONMENT.read(config))

    def get_dependency(self, worker_ctx):
        return Tokens(self.secret, self.ttl_seconds)
