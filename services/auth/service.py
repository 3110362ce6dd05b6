"""auth: users and password hashes. The RPC contract is docs/rpc.md; the rules are in commands.py."""
from nameko.extensions import DependencyProvider

from services.auth import commands
from services.auth.models import Base
from services.auth.passwords import Passwords, hashing_slots, make_hasher
from services.auth.throttle import LoginThrottle
from services.kit import Database, EventDispatcher
from services.kit.db import check_database
from services.kit.errors import EXPECTED_ERRORS, Busy, ServiceUnavailable
from services.kit.rpc import rpc


class PasswordHashing(DependencyProvider):
    """argon2id with the cost set in config (PASSWORD_HASH_TIME_COST, ..._MEMORY_COST, ...),
    behind a bounded queue (PASSWORD_HASH_CONCURRENCY, PASSWORD_HASH_QUEUE)."""

    def setup(self):
        config = self.container.config
        self.passwords = Passwords(make_hasher(config), hashing_slots(config))

    def get_dependency(self, worker_ctx):
        return self.passwords


class Throttle(DependencyProvider):
    """Login throttling (LOGIN_* settings), its state in this service's database."""

    def setup(self):
        self.throttle = LoginThrottle(self.container.config)

    def get_dependency(self, worker_ctx):
        return self.throttle


class AuthService:
    name = "auth"

    db = Database(Base)
    dispatch = EventDispatcher()
    passwords = PasswordHashing()
    throttle = Throttle()

    @rpc(expected_exceptions=EXPECTED_ERRORS + (Busy,))
    def register(self, email, password, name, role="student"):
        return commands.register(self.db.session, self.passwords, self.dispatch,
                                 email, password, name, role)

    @rpc(expected_exceptions=EXPECTED_ERRORS + (Busy,))
    def authenticate(self, email, password, client_address=None):
        return commands.authenticate(self.db.session, self.passwords, self.throttle, email,
                                     password, client_address)

    @rpc(expected_exceptions=EXPECTED_ERRORS, read_only=True)
    def get_user(self, user_id):
        return commands.get_user(self.db.session, user_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS + (ServiceUnavailable,), read_only=True)
    def health(self):
        return check_database(self.db.session, self.name)
