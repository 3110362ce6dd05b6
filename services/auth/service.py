"""auth: users and password hashes. The RPC contract is docs/rpc.md; the rules are in commands.py."""
from nameko.extensions import DependencyProvider

from services.auth import commands
from services.auth.models import Base
from services.auth.passwords import Passwords, make_hasher
from services.kit import Database, EventDispatcher
from services.kit.db import check_database
from services.kit.errors import EXPECTED_ERRORS, ServiceUnavailable
from services.kit.rpc import rpc


class PasswordHashing(DependencyProvider):
    """argon2id with the cost set in config (PASSWORD_HASH_TIME_COST, ..._MEMORY_COST, ...)."""

    def setup(self):
        self.passwords = Passwords(make_hasher(self.container.config))

    def get_dependency(self, worker_ctx):
        return self.passwords


class AuthService:
    name = "auth"

    db = Database(Base)
    dispatch = EventDispatcher()
    passwords = PasswordHashing()

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def register(self, email, password, name, role="student"):
        return commands.register(self.db.session, self.passwords, self.dispatch,
                                 email, password, name, role)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def authenticate(self, email, password):
        return commands.authenticate(self.db.session, self.passwords, email, password)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_user(self, user_id):
        return commands.get_user(self.db.session, user_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS + (ServiceUnavailable,))
    def health(self):
        return check_database(self.db.session, self.name)
